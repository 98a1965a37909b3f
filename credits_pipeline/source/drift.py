"""Schema drift: a source older (or newer) than the contract, tolerated where it is harmless.

Real databases lag their contract: the application's own schema dump predates
`users.subscription_provider` and `subscriptions.cycle_anchor_at`, and named `facelesses.genre_name`
`genre`. None of those matters to the ledger, yet failing the whole extraction on them would leave
the company with no reconciliation at all. So every contract column is either *required* (the
ledger replay, the 13 rules or the extraction itself need it: `Column.required` in `tables.py`) or
*optional*. A missing optional column is read as NULL — the SELECT names `NULL AS <column>`, typed
for the dialect so connectorx still gets a typed column — and reported by a WARN asset check
(`source_schema_drift`) naming table and column; a missing required column fails that table's asset
with one message, and the other tables still load.

`check_table` (source/reader.py) measures the drift once per asset and records which optional
columns are absent (`record`); `select_sql` and the fast reader ask (`absent_columns`) when they
build the SELECT. The record lives here, per table, because the SELECT is built far from the
inspection, behind two readers, and every asset inspects its table before it reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import dagster as dg

from credits_pipeline.source.column_types import types_by_kind
from credits_pipeline.source.tables import Table

SCHEMA_DRIFT_CHECK = "source_schema_drift"

# A typed NULL per dialect and column kind: connectorx types its Arrow columns from the result's
# metadata, and a bare NULL has no type it can map. SQLite's robust path takes a plain NULL.
_NULL_TYPES: dict[str, dict[str, str]] = {
    "mysql": types_by_kind(lambda t: t.mysql_cast),
    "postgresql": types_by_kind(lambda t: t.postgresql_cast),
}


@dataclass(frozen=True)
class Drift:
    """How one source table differs from the contract: the contract columns it lacks."""

    table: str
    missing_required: tuple[str, ...] = ()
    missing_optional: tuple[str, ...] = ()


def compare(table: Table, present: Iterable[str]) -> Drift:
    """The contract's extracted columns that `present` (the source's column names) lacks."""
    have = {name.lower() for name in present}
    missing = [c for c in table.extracted_columns if c.name.lower() not in have]
    return Drift(
        table.name,
        missing_required=tuple(c.name for c in missing if c.required),
        missing_optional=tuple(c.name for c in missing if not c.required),
    )


def _columns(names: tuple[str, ...]) -> str:
    return f"column{'s' if len(names) > 1 else ''} {', '.join(names)}"


def required_message(table: Table, drift: Drift) -> str:
    """The one message of a table whose source lacks a required column."""
    verb = "is" if len(drift.missing_required) == 1 else "are"
    required = ", ".join(c.name for c in table.extracted_columns if c.required)
    return (
        f"syllaby_v2.{table.name}: {_columns(drift.missing_required)} {verb} missing from the "
        f"source table (the contract requires {required}; the ledger and the reconciliation need "
        "them). The other tables still load; add the column to the source, or point "
        "CREDITS_SOURCE_URL at a database of the contract's schema."
    )


def optional_message(drift: Drift) -> str:
    """What the WARN check says about absent optional columns (or that there are none)."""
    if not drift.missing_optional:
        return f"syllaby_v2.{drift.table}: every contract column is present in the source."
    one = len(drift.missing_optional) == 1
    verb, it = ("is", "it") if one else ("are", "them")
    return (
        f"syllaby_v2.{drift.table}: {_columns(drift.missing_optional)} {verb} missing from the "
        f"source and loaded as NULL in raw.{drift.table} (optional: neither the ledger nor the "
        f"reconciliation needs {it}; marts using {it} see NULL)."
    )


# -- what the last inspection of each table found (see the module docstring) ---------------------

_LAST_DRIFT: dict[str, Drift] = {}


def record(drift: Drift) -> None:
    _LAST_DRIFT[drift.table] = drift


def last_drift(table: Table) -> Drift:
    return _LAST_DRIFT.get(table.name, Drift(table.name))


def absent_columns(table: Table) -> frozenset[str]:
    """The optional columns the source lacks, as found by the last `check_table` of this table."""
    return frozenset(last_drift(table).missing_optional)


def select_items(table: Table, quote: Callable[[str], str], dialect_name: str) -> list[str]:
    """The SELECT list of the contract's columns: each column, or a typed `NULL AS <column>`."""
    absent = absent_columns(table)
    family = "mysql" if dialect_name in ("mysql", "mariadb") else dialect_name
    types = _NULL_TYPES.get(family)
    items = []
    for c in table.extracted_columns:
        if c.name not in absent:
            items.append(quote(c.name))
        elif types is None:
            items.append(f"NULL AS {quote(c.name)}")
        else:
            items.append(f"CAST(NULL AS {types[c.kind]}) AS {quote(c.name)}")
    return items


# -- the asset check ------------------------------------------------------------------------------


def drift_check_spec(asset_key: dg.AssetKey) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        name=SCHEMA_DRIFT_CHECK,
        asset=asset_key,
        description="Schema drift: fails (WARN) when optional contract columns are missing from "
        "the source table; they load as NULL. A missing required column fails the asset itself.",
    )


def drift_check_result(table: Table, asset_key: dg.AssetKey) -> dg.AssetCheckResult:
    drift = last_drift(table)
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=SCHEMA_DRIFT_CHECK,
        passed=not drift.missing_optional,
        severity=dg.AssetCheckSeverity.WARN,
        description=optional_message(drift),
        metadata={
            "missing_optional_columns": dg.MetadataValue.text(
                ", ".join(drift.missing_optional) or "none"
            ),
        },
    )
