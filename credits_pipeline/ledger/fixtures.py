"""Small hand-built ledgers, loaded as the reconciliation's input relations.

The rules are only trustworthy if each one is pinned by a ledger of a few rows where a human can
see the answer. Writing those ledgers as SQL inserts buries the point of each test, so this module
turns plain Python rows (with sensible defaults: a catalog event by name, timestamps a minute
apart) into the typed temp tables `reconcile()` reads. It has no Dagster and no warehouse in it; the
tests, the benchmark and anyone debugging a rule can use it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from credits_pipeline.ledger import rules as sql
from credits_pipeline.source import tables
from credits_pipeline.source.catalog import CATALOG
from credits_pipeline.source.column_types import COLUMN_TYPES
from credits_pipeline.warehouse.interface import Session

BASE_TIME = dt.datetime(2025, 3, 1, 12, 0, 0)

# Events are seeded as the catalog, ids 1..20 in catalog order, unless a test passes its own.
CATALOG_EVENT_IDS: dict[str, int] = {e.name: i for i, e in enumerate(CATALOG, start=1)}

# The contract table each input relation reads (`inputs.WAREHOUSE_INPUTS` says the same in SQL),
# so that a fixture's columns have the types the warehouse hands the rules.
_RELATION_TABLES: dict[str, tables.Table] = {
    sql.LEDGER_ROWS: tables.CREDIT_HISTORIES,
    sql.EVENTS: tables.CREDIT_EVENTS,
    sql.USERS: tables.USERS,
    sql.FACELESSES: tables.FACELESSES,
    sql.VIDEOS: tables.VIDEOS,
    sql.REAL_CLONES: tables.REAL_CLONES,
    sql.SPEECHES: tables.SPEECHES,
    sql.QUARANTINED_USERS: tables.USERS,
}
# Columns whose kind on the way to the rules is not the contract's: the dbt ledger view casts the
# balance snapshot to double (`credit_history_rows.sql`), and a quarantined row's reason is the
# quarantine's own text column, not a column of the contract.
_KINDS_ON_THE_WAY: dict[tuple[str, str], tables.ColumnKind] = {
    (sql.LEDGER_ROWS, "previous_amount"): "float",
    (sql.QUARANTINED_USERS, "reason"): "str",
}


def _relation_types(relation: str) -> dict[str, str]:
    """Column -> DuckDB type of one input relation, in `rules.INPUT_RELATIONS`' column order."""
    table = _RELATION_TABLES[relation]
    return {
        column: COLUMN_TYPES[
            _KINDS_ON_THE_WAY.get((relation, column)) or table.column(column).kind
        ].duckdb
        for column in sql.INPUT_RELATIONS[relation]
    }


_TYPES: dict[str, dict[str, str]] = {
    relation: _relation_types(relation) for relation in sql.INPUT_RELATIONS
}


def catalog_events() -> list[dict[str, Any]]:
    """The application's catalog as `events` rows (what a freshly seeded database holds)."""
    return [
        {
            "id": CATALOG_EVENT_IDS[e.name],
            "name": e.name,
            "type": e.type,
            "calculation_type": e.calculation_type,
            "value": float(e.value),
            "min_amount": None if e.min_amount is None else float(e.min_amount),
        }
        for e in CATALOG
    ]


def ledger_row(
    id: int,
    user_id: int,
    event: str | int,
    amount: int,
    previous_amount: int | None,
    *,
    index: int | None = None,
    event_type: int | None = None,
    creditable: tuple[str | None, int | None] | None = None,
    created_at: dt.datetime | str | None = "auto",
    updated_at: dt.datetime | str | None = "auto",
) -> dict[str, Any]:
    """One ledger row. `event` is a catalog name (or a raw credit_events_id); defaults follow it.

    Why defaults: most tests care about one or two columns, so `event_type` defaults to the
    catalog's type, `calculative_index` to the amount's inverse pricing (index = amount for resets,
    adds and purchases, 2 * amount / value for calculative spends), and timestamps to one minute
    per id after BASE_TIME.
    """
    if isinstance(event, str):
        events_id = CATALOG_EVENT_IDS[event]
        spec = CATALOG[events_id - 1]
        default_type = spec.type
        if index is None:
            if spec.calculation_type == "calculative" and spec.effect == "spend":
                index = round(2 * amount / spec.value)
            elif spec.calculation_type == "calculative" and spec.effect == "add":
                index = round(amount / spec.value)
            else:
                index = amount
    else:
        events_id, default_type = event, 2
    when = BASE_TIME + dt.timedelta(minutes=id)
    created = when if created_at == "auto" else created_at
    updated = created if updated_at == "auto" else updated_at
    ctype, cid = creditable if creditable is not None else (None, None)
    return {
        "id": id,
        "user_id": user_id,
        "credit_events_id": events_id,
        "creditable_type": ctype,
        "creditable_id": cid,
        "calculative_index": index if index is not None else amount,
        "amount": amount,
        "previous_amount": previous_amount,
        "event_type": default_type if event_type is None else event_type,
        "created_at": created,
        "updated_at": updated,
    }


def load_inputs(
    con: Session,
    *,
    rows: Iterable[Mapping[str, Any]],
    users: Iterable[Mapping[str, Any] | tuple] = (),
    events: Iterable[Mapping[str, Any]] | None = None,
    facelesses: Iterable[Mapping[str, Any]] = (),
    videos: Iterable[Mapping[str, Any]] = (),
    real_clones: Iterable[Mapping[str, Any]] = (),
    speeches: Iterable[Mapping[str, Any]] = (),
    quarantined_users: Iterable[Mapping[str, Any]] = (),
) -> None:
    """Create the input relations of `rules.INPUT_RELATIONS` as temp tables on `con`.

    `users` rows may be tuples `(id, remaining_credit_amount, extra_credits)`.
    """
    users = [
        u
        if isinstance(u, Mapping)
        else {"id": u[0], "remaining_credit_amount": u[1], "extra_credits": u[2]}
        for u in users
    ]
    data: dict[str, list[Any]] = {
        sql.LEDGER_ROWS: list(rows),
        sql.EVENTS: list(catalog_events() if events is None else events),
        sql.USERS: users,
        sql.FACELESSES: list(facelesses),
        sql.VIDEOS: list(videos),
        sql.REAL_CLONES: list(real_clones),
        sql.SPEECHES: list(speeches),
        sql.QUARANTINED_USERS: list(quarantined_users),
    }
    for name, records in data.items():
        columns = _TYPES[name]
        ddl = ", ".join(f"{c} {t}" for c, t in columns.items())
        con.execute(f"create or replace temp table {name} ({ddl})")
        if records:
            marks = ", ".join("?" for _ in columns)
            con.executemany(
                f"insert into {name} values ({marks})",
                [tuple(r.get(c) for c in columns) for r in records],
            )
