"""Where the reconciliation's inputs come from in the warehouse.

`reconcile()` reads fixed relation names (`rules.INPUT_RELATIONS`) so that tests can hand it a
ten-row ledger. In production those names must point at the warehouse: the ledger and the catalog
from the dbt views `credits.credit_histories` / `credits.credit_events` (renamed back to the
source's column names), users and content from `raw.*`, and the cut-off from
`raw.extraction_cutoff`. This module is that mapping, in one place, with no Dagster in it.
The ledger view is copied once into a temp table: the rules scan it several times, and a dbt view
over a union of partitions is more expensive to re-evaluate than to copy its 11 columns.
"""

from __future__ import annotations

import datetime as dt

from credits_pipeline.ledger import rules as sql
from credits_pipeline.validation.outcome import REASON_COLUMN
from credits_pipeline.warehouse.interface import Session
from credits_pipeline.warehouse.raw_tables import CUTOFF_RELATION

LEDGER_COPY_TABLE = "_recon_ledger_input"

# Each input relation as a select over the warehouse (column order of rules.INPUT_RELATIONS).
WAREHOUSE_INPUTS: dict[str, str] = {
    sql.LEDGER_ROWS: f"select * from {LEDGER_COPY_TABLE}",
    sql.EVENTS: """
        select
            credit_event_id as id,
            name,
            event_type as type,
            calculation_type,
            value,
            min_amount
        from credits.credit_events
    """,
    sql.USERS: "select id, remaining_credit_amount, extra_credits from raw.users",
    sql.FACELESSES: "select id, user_id, video_id from raw.facelesses",
    sql.VIDEOS: "select id, user_id, type, status from raw.videos",
    sql.REAL_CLONES: "select id, user_id, status from raw.real_clones",
    sql.SPEECHES: "select id, user_id, status from raw.speeches",
    # quarantined users are in the source: their rows say so instead of "not in users"
    sql.QUARANTINED_USERS: f"""
        select try_cast(id as bigint) as id, {REASON_COLUMN} as reason
        from {sql.USERS_QUARANTINE_RELATION}
    """,
}

LEDGER_COPY_SQL = f"""
create or replace temp table {LEDGER_COPY_TABLE} as
select
    credit_history_id as id,
    user_id,
    credit_event_id as credit_events_id,
    creditable_type,
    creditable_id,
    calculative_index,
    unsigned_amount as amount,
    previous_amount,
    event_type,
    created_at,
    updated_at
from credits.credit_histories
"""

CUTOFF_SQL = f"select max(cutoff_at) from {CUTOFF_RELATION}"


def create_warehouse_inputs(con: Session) -> None:
    """Expose the warehouse under the reconciliation's input names, as temp views."""
    con.execute(LEDGER_COPY_SQL)
    for name, select in WAREHOUSE_INPUTS.items():
        con.execute(f"create or replace temp view {name} as {select}")


def drop_warehouse_inputs(con: Session) -> None:
    for name in WAREHOUSE_INPUTS:
        con.execute(f"drop view if exists {name}")
    con.execute(f"drop table if exists {LEDGER_COPY_TABLE}")


def read_cutoff(con: Session) -> dt.datetime:
    """The run's extraction cut-off; a missing one is an error, never a silent 'now'."""
    row = con.execute(CUTOFF_SQL).fetchone()
    if row is None or row[0] is None:
        raise RuntimeError(
            f"{CUTOFF_RELATION} holds no cutoff_at: run the extraction before the reconciliation"
        )
    value = row[0]
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))
