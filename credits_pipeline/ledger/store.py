"""Storing the reconciliation's reports: the one write, and reading them back whole for tests.

Why a module of its own: `reconcile.py` computes both reports into relations on the run's session
(`reconcile.REPORT_RELATIONS`), `report.py` turns bounded reads of them into metadata, and this
module puts them in the warehouse — straight from those relations, with the next replay state, in
the caller's transaction — so that computing, describing and storing each have one home.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from credits_pipeline.ledger import replay_state as rs
from credits_pipeline.ledger import rule_scope as rsc
from credits_pipeline.ledger import rules_catalog as rc
from credits_pipeline.ledger.reconcile import (
    ANOMALIES_ORDER,
    ANOMALIES_REPORT_TABLE,
    RECONCILIATION_WORK_TABLE,
    REPLAY_ROWS_TABLE,
    REPORT_RELATIONS,
    ROW_POOLS_WORK_TABLE,
    RULES_TABLE,
    ReconciliationResult,
)
from credits_pipeline.warehouse import session
from credits_pipeline.warehouse.interface import Session


def write_reconciliation(
    con: Session, result: ReconciliationResult, schema: str = rc.MARTS_SCHEMA
) -> None:
    """Replace both reports with the run's report relations, in the caller's transaction.

    The rows go from the relations `reconcile()` left on the session straight into the stored
    tables (`REPORT_RELATIONS`: same columns, same rows, same order), never through Python. The
    figures in `result` — counts, summaries, worst violations, new violations — were read from
    those same relations, and the metadata previews read them too: what is stored is exactly what
    was reported. So call this on the session that computed `result`, before
    `drop_working_tables`. A result computed with `keep_state` also stores the next replay state
    (from the run's temp tables), replaced together with the reports: the state always describes
    the reports stored with it. The pools around every ledger row (`credits.ledger_row_pools`, what
    the balance marts read) are replaced in the same transaction, so a mart's balance and the
    report's always come from the same replay. `session.replace_tables` says what "together" means
    on each engine.
    """
    tables: dict[str, pa.Table | str] = {
        f"{schema}.{name}": relation for name, relation in REPORT_RELATIONS.items()
    }
    tables[f"{rs.STATE_SCHEMA}.{rs.ROW_POOLS_TABLE}"] = ROW_POOLS_WORK_TABLE
    if result.state_kept:
        for name, source in state_sources().items():
            tables[f"{rs.STATE_SCHEMA}.{name}"] = source
    session.replace_tables(con, tables)


def state_sources() -> dict[str, str]:
    """Each persisted replay-state table and the temp table of this run that replaces it."""
    return {**rs.PERSIST_SOURCES, rs.FLAGS_TABLE: REPLAY_ROWS_TABLE, **rsc.PERSIST_SOURCES}


@dataclass(frozen=True)
class ReportTables:
    """Both reports of a session's last run, read whole as Arrow in their stored order, with the
    result that describes them. For tests and benchmarks on small ledgers: the pipeline itself
    never reads the reports whole (`report.py` reads bounded previews)."""

    result: ReconciliationResult
    reconciliation: pa.Table
    anomalies: pa.Table


def read_reports(con: Session, result: ReconciliationResult) -> ReportTables:
    """The report relations `result` describes, read whole (call before `drop_working_tables`)."""
    reconciliation = con.execute(
        f"select * from {RECONCILIATION_WORK_TABLE} order by user_id"
    ).fetch_arrow_table()
    anomalies = con.execute(
        f"select a.* from {ANOMALIES_REPORT_TABLE} as a join {RULES_TABLE} as k on k.rule = a.rule "
        f"order by {ANOMALIES_ORDER}"
    ).fetch_arrow_table()
    return ReportTables(result, reconciliation, anomalies)
