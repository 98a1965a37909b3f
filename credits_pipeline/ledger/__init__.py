"""The ledger room: the replay and the 13 rules as pure functions, and their Dagster wiring.

`replay.py` (numba) and `rules.py` (SQL) know nothing of Dagster; `reconcile.py` runs both over a
warehouse session; `report.py` describes the reports and `store.py` writes them; `assets.py` and
`checks.py` are the thin Dagster layer. What the lead needs to
assemble the definitions is re-exported here.
"""

from __future__ import annotations

from credits_pipeline.ledger.assets import (
    build_money_check_gate,
    build_reconciliation_assets,
    reconciliation_assets,
    reconciliation_gates,
    reconciliation_multi_asset,
)
from credits_pipeline.ledger.checks import (
    ANOMALIES_KEY,
    RECONCILIATION_KEY,
    ROW_POOLS_KEY,
    blocking_from_settings,
    check_key,
    reconciliation_check_specs,
)
from credits_pipeline.ledger.reconcile import (
    ReconciliationResult,
    RuleSummary,
    reconcile,
)
from credits_pipeline.ledger.rules_catalog import (
    CHECK_NAMES,
    GROUP_NAME,
    MONEY_RULES,
    RULE_CODES,
    RULES,
    SEVERITY,
)
from credits_pipeline.ledger.store import write_reconciliation

__all__ = [
    "ANOMALIES_KEY",
    "CHECK_NAMES",
    "GROUP_NAME",
    "MONEY_RULES",
    "RECONCILIATION_KEY",
    "ROW_POOLS_KEY",
    "RULES",
    "RULE_CODES",
    "SEVERITY",
    "ReconciliationResult",
    "RuleSummary",
    "blocking_from_settings",
    "build_money_check_gate",
    "build_reconciliation_assets",
    "check_key",
    "reconcile",
    "reconciliation_assets",
    "reconciliation_check_specs",
    "reconciliation_gates",
    "reconciliation_multi_asset",
    "write_reconciliation",
]
