"""The dbt project built from the CLI around the reconciliation, and the hand-written ledger's
next days, as the dbt tests share them.

The marts read the reconciliation's replay (`credits.ledger_row_pools`), so a build of the whole
project is three steps, as in the pipeline: `dbt build` of everything the reconciliation reads,
the reconciliation itself (the same functions the Dagster asset calls, with its stored state), then
`dbt build` of the replayed ledger and what is built from it. Day 2 and day 3 extend the
hand-written ledger of test_dbt_models.py the way the extraction would.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from credits_pipeline import settings
from credits_pipeline.ledger.inputs import (
    create_warehouse_inputs,
    drop_warehouse_inputs,
    read_cutoff,
)
from credits_pipeline.ledger.reconcile import drop_working_tables, reconcile
from credits_pipeline.ledger.store import write_reconciliation
from credits_pipeline.transform.assets import REPLAY_MODEL_SELECT
from credits_pipeline.transform.dbt_project import dbt_environment
from credits_pipeline.warehouse.duckdb_warehouse import DuckDBWarehouse
from credits_pipeline_tests.dbt_duckdb import dbt_resource
from credits_pipeline_tests.test_dbt_models import EVENT_ID, T

DAY_2_CUTOFF = T(2025, 4, 1, 3, 0)
# id, user, event, amount, previous_amount, created_at, in the open snapshot
DAY_2_ROWS = [
    # user 1 goes on from the day-1 state (498 + 50 purchased)
    (112, 1, "ai_image_generated", 1, 498, T(2025, 3, 31, 9, 0), False),
    # a purchase, then a spend the subscription pool cannot cover (drawn from the purchased pool)
    (113, 1, "custom_credit_purchased", 500, 550, T(2025, 3, 31, 10, 0), False),
    (114, 1, "real_clone_generated", 600, 497, T(2025, 3, 31, 11, 0), False),
    # future-dated: its day is capped at the cut-off's day, 04-01
    (115, 1, "ai_image_generated", 1, 497, T(2025, 4, 5, 8, 0), True),
    # a late commit: user 2's last replayed id is 206
    (150, 2, "ai_image_generated", 1, 69, T(2025, 3, 31, 12, 0), False),
    # a new user, with an overdraft: 600 charged with 500 + 0 in the pools
    (401, 4, "subscribe_to_trial", 500, 0, T(2025, 3, 31, 20, 0), False),
    (402, 4, "real_clone_generated", 600, 500, T(2025, 4, 1, 1, 0), True),
]
DAY_3_CUTOFF = T(2025, 4, 2, 3, 0)
DAY_3_ROWS = [
    # committed late on user 4's last day so far (04-01, before the day-2 cut-off), id above it
    (403, 4, "custom_credit_purchased", 50, 0, T(2025, 4, 1, 2, 0), False),
    (404, 4, "monthly_credits_added", 100, 0, T(2025, 4, 2, 1, 0), True),
]


def _ledger_values(row) -> list:
    history_id, user_id, event, amount, previous, created, _ = row
    event_type = 2 if event.endswith("generated") else 1
    return [
        history_id,
        user_id,
        EVENT_ID[event],
        None,
        None,
        event,
        None,
        1,
        0,
        amount,
        previous,
        event_type,
        "[]",
        created,
        created,
    ]


def advance_to(warehouse: Path, cutoff: dt.datetime, rows: list[tuple]) -> None:
    """Extract one more day as the extraction would: the previous open day closes into its
    partition, the new rows land in their day's partition or in the new open snapshot."""
    closed_before = dt.datetime.combine(cutoff.date(), dt.time())
    con = duckdb.connect(str(warehouse))
    try:
        con.execute(
            "insert into raw.credit_histories select * exclude (_partition),"
            " cast(created_at as date) from raw.credit_histories__open"
            " where created_at < ? and id not in (select id from raw.credit_histories)",
            [closed_before],
        )
        # the rows still open (later, or without created_at) stay in the new open snapshot
        con.execute("delete from raw.credit_histories__open where created_at < ?", [closed_before])
        for row in rows:
            open_row = row[-1]
            table = "credit_histories__open" if open_row else "credit_histories"
            con.execute(
                f"insert into raw.{table} values ({', '.join('?' * 16)})",
                [*_ledger_values(row), None if open_row else row[5].date()],
            )
        con.execute(
            "insert into raw.users select 4, null, 1, null, null, 100, null, 0, ?, ?"
            " where not exists (select 1 from raw.users where id = 4)",
            [T(2025, 3, 31, 20), T(2025, 3, 31, 20)],
        )
        con.execute(
            "update raw.extraction_cutoff set cutoff_at = ?, ledger_closed_before = ?",
            [cutoff, closed_before],
        )
    finally:
        con.close()


def reconcile_warehouse(warehouse: Path) -> None:
    """The reconciliation on a warehouse file, as its Dagster asset runs it (state kept)."""
    with DuckDBWarehouse(path=str(warehouse)).transaction() as con:
        create_warehouse_inputs(con)
        result = reconcile(con, read_cutoff(con), keep_state=True)
        write_reconciliation(con, result)
        drop_working_tables(con)
        drop_warehouse_inputs(con)


def _dbt(args: list[str]) -> dict[str, str]:
    with dbt_environment():
        invocation = dbt_resource().cli(["build", *args], raise_on_error=False)
    invocation.wait()
    results = invocation.get_artifact("run_results.json")["results"]
    statuses = {r["unique_id"]: r["status"] for r in results}
    errors = {r["unique_id"]: r.get("message") for r in results if r["status"] in ("error", "fail")}
    assert invocation.is_successful() and not errors, errors or invocation.get_error()
    return statuses


def dbt_build(warehouse: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The whole project built around the reconciliation; every node's status, both builds'."""
    monkeypatch.setenv(settings.WAREHOUSE_PATH_VAR, str(warehouse))
    statuses = _dbt(["--exclude", REPLAY_MODEL_SELECT])
    reconcile_warehouse(warehouse)
    after = _dbt(["--select", REPLAY_MODEL_SELECT])
    return statuses | after
