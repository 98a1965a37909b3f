"""The 13 ledger rules of the contract, named once: codes, severities, check names, relations.

Everything downstream keys on these strings — the `rule` column of `marts.ledger_anomalies`, the
asset check names, the alert sensor and the acceptance checks — so they are plain constants in one
module that uses nothing of Dagster or DuckDB (its marts schema and group name are `names.py`'s).
The severity of a rule says what its failure means: rules about money (credits that appear, vanish
or are priced wrong) are ERROR, rules about data hygiene (orphans, timestamps, missing charges,
duplicate releases) are WARN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from credits_pipeline.names import CREDITS_PREFIX, GROUP_RECONCILIATION, MARTS_PREFIX

Severity = Literal["ERROR", "WARN"]

# Rule codes, used verbatim in marts.ledger_anomalies.rule (contract section 3).
CHAIN_BREAK = "chain_break"
BALANCE_DRIFT = "balance_drift"
OVERDRAFT_WRITEOFF = "overdraft_writeoff"
EVENT_TYPE_MISMATCH = "event_type_mismatch"
PRICING_MISMATCH = "pricing_mismatch"
EXCESS_REFUND = "excess_refund"
DOUBLE_CHARGE = "double_charge"
UNCHARGED_CONTENT = "uncharged_content"
ORPHAN_USER = "orphan_user"
ORPHAN_EVENT = "orphan_event"
ORPHAN_CREDITABLE = "orphan_creditable"
DUPLICATE_MONTHLY_RELEASE = "duplicate_monthly_release"
TIMESTAMP_ORDER = "timestamp_order"

# The two relations the reconciliation writes (contract section 4).
MARTS_SCHEMA = MARTS_PREFIX
RECONCILIATION_TABLE = "user_balance_reconciliation"
ANOMALIES_TABLE = "ledger_anomalies"
# The replay's pools around every ledger row, published for the marts (the one replay), and the
# dbt source that declares it (models/staging/_sources.yml).
ROW_POOLS_SCHEMA = CREDITS_PREFIX  # names.credits_key(ROW_POOLS_TABLE) is its asset
ROW_POOLS_TABLE = "ledger_row_pools"
ROW_POOLS_SOURCE = "replay"

# Dagster names.
GROUP_NAME = GROUP_RECONCILIATION
CHECK_PREFIX = "ledger_rule_"

# Entity types of anomaly rows.
ENTITY_CREDIT_HISTORY = "credit_history"
ENTITY_USER = "user"

# User statuses of marts.user_balance_reconciliation.
STATUS_OK = "ok"
STATUS_DRIFT = "drift"
STATUS_BROKEN_CHAIN = "broken_chain"


@dataclass(frozen=True)
class Rule:
    """One ledger rule: its code, severity, which relation its check is attached to, and a summary.

    `scope` says what one violation is about: a ledger `row`, a `user` (balance_drift) or a
    `content` row (uncharged_content); it decides what the "ten worst" lists show.
    """

    code: str
    severity: Severity
    relation: str
    scope: Literal["row", "user", "content"]
    summary: str

    @property
    def check_name(self) -> str:
        return f"{CHECK_PREFIX}{self.code}"

    @property
    def is_money(self) -> bool:
        return self.severity == "ERROR"


RULES: tuple[Rule, ...] = (
    Rule(
        CHAIN_BREAK,
        "ERROR",
        RECONCILIATION_TABLE,
        "row",
        "a row whose previous_amount differs from what the replay expects",
    ),
    Rule(
        BALANCE_DRIFT,
        "ERROR",
        RECONCILIATION_TABLE,
        "user",
        "a stored pool differs from the replayed pool after the user's last row",
    ),
    Rule(
        OVERDRAFT_WRITEOFF,
        "ERROR",
        ANOMALIES_TABLE,
        "row",
        "a spend larger than both pools together before it",
    ),
    Rule(
        EVENT_TYPE_MISMATCH,
        "WARN",
        ANOMALIES_TABLE,
        "row",
        "a row whose event_type differs from its event's type",
    ),
    Rule(
        PRICING_MISMATCH,
        "ERROR",
        ANOMALIES_TABLE,
        "row",
        "a row whose amount differs from its event's pricing rule, or a spend below min_amount",
    ),
    Rule(
        EXCESS_REFUND,
        "ERROR",
        ANOMALIES_TABLE,
        "row",
        "a refund without creditable, or refunding more than was charged for it",
    ),
    Rule(
        DOUBLE_CHARGE,
        "ERROR",
        ANOMALIES_TABLE,
        "row",
        "a spend repeating the same spend on the same creditable within 60 s, no refund between",
    ),
    Rule(
        UNCHARGED_CONTENT,
        "WARN",
        ANOMALIES_TABLE,
        "content",
        "completed content without its charge",
    ),
    Rule(ORPHAN_USER, "WARN", ANOMALIES_TABLE, "row", "a row whose user_id is not in users"),
    Rule(
        ORPHAN_EVENT,
        "WARN",
        ANOMALIES_TABLE,
        "row",
        "a row whose credit_events_id is not in credit_events",
    ),
    Rule(
        ORPHAN_CREDITABLE,
        "WARN",
        ANOMALIES_TABLE,
        "row",
        "a row with an unknown alias, or whose creditable is missing or another user's",
    ),
    Rule(
        DUPLICATE_MONTHLY_RELEASE,
        "WARN",
        ANOMALIES_TABLE,
        "row",
        "a second (third, ...) monthly_credits_added of a user in one UTC month",
    ),
    Rule(
        TIMESTAMP_ORDER,
        "WARN",
        ANOMALIES_TABLE,
        "row",
        "NULL created_at, updated_at before created_at, created_at after the cut-off or before "
        "the user's previous row",
    ),
)
RULES_BY_CODE: dict[str, Rule] = {r.code: r for r in RULES}
RULE_CODES: tuple[str, ...] = tuple(r.code for r in RULES)
SEVERITY: dict[str, Severity] = {r.code: r.severity for r in RULES}
MONEY_RULES: frozenset[str] = frozenset(r.code for r in RULES if r.is_money)
CHECK_NAMES: dict[str, str] = {r.code: r.check_name for r in RULES}

# Check names as constants, for code that wires or selects one check by name.
CHECK_CHAIN_BREAK = CHECK_NAMES[CHAIN_BREAK]
CHECK_BALANCE_DRIFT = CHECK_NAMES[BALANCE_DRIFT]
CHECK_OVERDRAFT_WRITEOFF = CHECK_NAMES[OVERDRAFT_WRITEOFF]
CHECK_EVENT_TYPE_MISMATCH = CHECK_NAMES[EVENT_TYPE_MISMATCH]
CHECK_PRICING_MISMATCH = CHECK_NAMES[PRICING_MISMATCH]
CHECK_EXCESS_REFUND = CHECK_NAMES[EXCESS_REFUND]
CHECK_DOUBLE_CHARGE = CHECK_NAMES[DOUBLE_CHARGE]
CHECK_UNCHARGED_CONTENT = CHECK_NAMES[UNCHARGED_CONTENT]
CHECK_ORPHAN_USER = CHECK_NAMES[ORPHAN_USER]
CHECK_ORPHAN_EVENT = CHECK_NAMES[ORPHAN_EVENT]
CHECK_ORPHAN_CREDITABLE = CHECK_NAMES[ORPHAN_CREDITABLE]
CHECK_DUPLICATE_MONTHLY_RELEASE = CHECK_NAMES[DUPLICATE_MONTHLY_RELEASE]
CHECK_TIMESTAMP_ORDER = CHECK_NAMES[TIMESTAMP_ORDER]
