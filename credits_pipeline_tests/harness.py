"""Small builders the extraction tests share: a tiny syllaby_v2 database and an isolated run.

Tests write their own source database (SQLite file, or a fresh MariaDB/PostgreSQL database), point a
throw-away DuckDB warehouse and Dagster instance at temporary paths, and run the real extraction
assets through Dagster. Nothing here fakes a component.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable

import dagster as dg
import duckdb
import sqlalchemy as sa
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from credits_pipeline import settings
from credits_pipeline.cli import failure_message
from credits_pipeline.extract.assets import extraction_assets, source_table_specs
from credits_pipeline.source.resource import SourceDatabase
from credits_pipeline.source.schema import create_tables
from credits_pipeline.warehouse.duckdb_warehouse import DuckDBWarehouse

DAY = dt.datetime(2025, 1, 1)


def ts(days: float = 0, hours: float = 0) -> dt.datetime:
    return DAY + dt.timedelta(days=days, hours=hours)


EVENTS = [
    dict(
        id=1,
        name="subscribe_to_trial",
        type=1,
        calculation_type="fixed",
        value=500,
        min_amount=None,
    ),
    dict(id=2, name="idea_discovered", type=2, calculation_type="fixed", value=15, min_amount=15),
    dict(
        id=3,
        name="custom_credit_purchased",
        type=1,
        calculation_type="fixed",
        value=0,
        min_amount=None,
    ),
]


def ledger_row(
    id: int, user_id: int, event: int, amount: int, previous: int, created_at, **extra
) -> dict:
    row = dict(
        id=id,
        user_id=user_id,
        credit_events_id=event,
        creditable_type=None,
        creditable_id=None,
        description=None,
        label=None,
        calculative_index=amount,
        event_value=amount,
        amount=amount,
        previous_amount=previous,
        event_type=1 if event != 2 else 2,
        meta="[]",
        created_at=created_at,
        updated_at=created_at,
    )
    row.update(extra)
    return row


def clean_ledger() -> list[dict]:
    """Two users over three days, plus one row with NULL created_at (kept, not dropped)."""
    return [
        ledger_row(1, 1, 1, 500, 0, ts(0, 1)),
        ledger_row(2, 1, 2, 15, 500, ts(1, 2)),
        ledger_row(3, 2, 1, 500, 0, ts(1, 3)),
        ledger_row(4, 2, 3, 100, 100, ts(2, 4), meta='{"credits": 100}'),
        ledger_row(5, 1, 2, 15, 485, None),
    ]


USERS = [
    dict(
        id=1,
        name="Ada Lovelace",
        email="ada@example.com",
        subscription_provider=1,
        remaining_credit_amount=470,
        extra_credits=0,
        created_at=ts(),
        updated_at=ts(),
    ),
    dict(
        id=2,
        name="Alan Turing",
        email="alan@example.com",
        subscription_provider=1,
        remaining_credit_amount=500,
        extra_credits=100,
        created_at=ts(),
        updated_at=ts(),
    ),
]

VIDEOS = [
    dict(
        id=1,
        user_id=1,
        title="t",
        type="custom",
        status="rendering",
        exports=0,
        retries=0,
        created_at=ts(),
        updated_at=ts(),
    ),
]


def write_source(url: str, ledger: Iterable[dict] | None = None) -> sa.Engine:
    engine = sa.create_engine(url)
    md = create_tables(engine)
    with engine.begin() as conn:
        conn.execute(md.tables["credit_events"].insert(), EVENTS)
        conn.execute(md.tables["users"].insert(), USERS)
        conn.execute(md.tables["videos"].insert(), VIDEOS)
        rows = list(ledger if ledger is not None else clean_ledger())
        if rows:
            conn.execute(md.tables["credit_histories"].insert(), rows)
    return engine


def extraction_definitions(
    source_url: str, warehouse_path: str, batch_size: int = 100_000
) -> dg.Definitions:
    return dg.Definitions(
        assets=[*source_table_specs, *extraction_assets],
        resources={
            "source": SourceDatabase(url=source_url, batch_size=batch_size),
            "warehouse": DuckDBWarehouse(path=warehouse_path),
        },
        executor=dg.in_process_executor,
    )


def code_location_definitions(monkeypatch) -> dg.Definitions:
    """The code location as `make ui` loads it: on the embedded demo, chosen explicitly.

    Without `CREDITS_SOURCE_URL` the code location refuses to load (there is no silent demo), so a
    test that only inspects the definitions says which source it means.
    """
    import importlib

    monkeypatch.setenv(settings.SOURCE_URL_VAR, settings.DEMO_SOURCE)
    return importlib.import_module("credits_pipeline.definitions").build_definitions()


def ledger_as_of_cut(warehouse: str) -> list[tuple]:
    """The ledger as dbt and the reconciliation read it (docs/warehouse-layout.md)."""
    return query(
        warehouse,
        """
        select * exclude (_partition) from raw.credit_histories
        where created_at < (select ledger_closed_before from raw.extraction_cutoff)
            and id not in (select id from raw.credit_histories__open)
        union all
        select * exclude (_partition) from raw.credit_histories__open
        """,
    )


def run_extraction(
    instance: dg.DagsterInstance,
    source_url: str,
    warehouse_path: str,
    first: str = "2025-01-01",
    last: str = "2025-01-05",
    batch_size: int = 100_000,
    selection: list[dg.AssetKey] | None = None,
) -> dg.ExecuteInProcessResult:
    defs = extraction_definitions(source_url, warehouse_path, batch_size)
    job = defs.resolve_implicit_global_asset_job_def()
    tags = {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}
    return job.execute_in_process(
        instance=instance, tags=tags, raise_on_error=False, asset_selection=selection
    )


def run_status_context(
    instance: dg.DagsterInstance,
    result: dg.ExecuteInProcessResult,
    sensor_name: str,
    kind: dg.DagsterEventType,
) -> dg.RunStatusSensorContext:
    """The context a run-status sensor gets for `result`'s run reaching status `kind`."""
    [event] = [e for e in result.all_events if e.event_type == kind]
    return dg.build_run_status_sensor_context(
        sensor_name=sensor_name,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        dagster_event=event,
    )


def step_failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    """What a data engineer reads for each failed step (the Failure's description, if any)."""
    return [
        failure_message(e)
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.STEP_FAILURE
    ]


def check_results(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], object]:
    return {
        (
            e.event_specific_data.asset_key.to_user_string(),
            e.event_specific_data.check_name,
        ): e.event_specific_data
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    }


def query(warehouse_path: str, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(warehouse_path, read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def warehouse_fingerprint(warehouse_path: str) -> dict[str, list[tuple]]:
    """Every raw relation's rows (sorted), to compare two states of the warehouse."""
    con = duckdb.connect(warehouse_path, read_only=True)
    try:
        names = [
            r[0]
            for r in con.execute(
                "select table_name from information_schema.tables where table_schema = 'raw' "
                "and table_name <> 'extraction_cutoff' order by 1"
            ).fetchall()
        ]
        return {
            n: sorted(map(repr, con.execute(f"select * from raw.{n}").fetchall())) for n in names
        }
    finally:
        con.close()


FLOAT_REL_TOL = 1e-9


def assert_same_rows(actual: list[tuple], expected: list[tuple], label: str) -> None:
    """The same rows in any order, floats equal to 9 significant digits.

    Why not exact or rounded floats: a sum of doubles depends on the order the engine adds them,
    which differs between builds (parallel aggregation, an incremental run), and rounding to fixed
    decimals still splits two nearly equal values that straddle a rounding boundary.
    """

    def sort_key(row: tuple) -> str:
        return repr(tuple(f"{v:.6g}" if isinstance(v, float) else v for v in row))

    assert len(actual) == len(expected), f"{label}: {len(actual)} rows, expected {len(expected)}"
    for a, e in zip(sorted(actual, key=sort_key), sorted(expected, key=sort_key), strict=True):
        same = len(a) == len(e) and all(
            math.isclose(x, y, rel_tol=FLOAT_REL_TOL, abs_tol=FLOAT_REL_TOL)
            if isinstance(x, float) and isinstance(y, float)
            else x == y
            for x, y in zip(a, e, strict=True)
        )
        assert same, f"{label}: {a} != {e}"
