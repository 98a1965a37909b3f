"""The 13 ledger rules as Dagster asset checks, evaluated by the reconciliation multi-asset itself.

A check that re-read 5M ledger rows would double the cost of every run, and the reconciliation has
already counted every violation; so the checks are declared as `check_specs` of the multi-asset and
their results are built from its `ReconciliationResult`. Each result carries what a person needs to
act: how many violations, how many credits they involve, the ten worst as a Markdown table, and
the runbook section saying what to do next. The metadata keys are `check_metadata`'s, which the
alert sensor reads: the two sides cannot drift apart.
Checks never block the report itself (contract section 4); `blocking=True` is only for the money
rules, so that the lead can make the revenue mart wait on them when
`settings.block_revenue_on_error()` asks for it. Then those checks are evaluated by a gate of their
own, after the reports are stored, from the stored anomalies with the same queries
(`reconcile.rule_summaries`): the same numbers, and only what is downstream of the reports waits.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator, Mapping

import dagster as dg

from credits_pipeline import check_metadata as cm
from credits_pipeline import settings
from credits_pipeline.ledger import rules_catalog as rc
from credits_pipeline.ledger.reconcile import WORST_COLUMNS, ReconciliationResult, RuleSummary
from credits_pipeline.names import credits_key
from credits_pipeline.runbook import runbook_link

RECONCILIATION_KEY = dg.AssetKey([rc.MARTS_SCHEMA, rc.RECONCILIATION_TABLE])
ANOMALIES_KEY = dg.AssetKey([rc.MARTS_SCHEMA, rc.ANOMALIES_TABLE])
# The replay's pools around every ledger row, which the marts read (dbt source `replay`).
ROW_POOLS_KEY = credits_key(rc.ROW_POOLS_TABLE)
ASSET_KEY_BY_RELATION = {
    rc.RECONCILIATION_TABLE: RECONCILIATION_KEY,
    rc.ANOMALIES_TABLE: ANOMALIES_KEY,
}
SEVERITY: dict[str, dg.AssetCheckSeverity] = {
    code: dg.AssetCheckSeverity.ERROR if sev == "ERROR" else dg.AssetCheckSeverity.WARN
    for code, sev in rc.SEVERITY.items()
}


def check_key(code: str) -> dg.AssetCheckKey:
    rule = rc.RULES_BY_CODE[code]
    return dg.AssetCheckKey(ASSET_KEY_BY_RELATION[rule.relation], rule.check_name)


def blocking_from_settings() -> bool:
    """Whether the ERROR checks should be blocking (CREDITS_BLOCK_REVENUE_ON_ERROR)."""
    return settings.block_revenue_on_error()


def check_description(rule: rc.Rule) -> str:
    """What the rule checks, its severity, and where the next step is (the runbook section)."""
    return f"[{rule.severity}] `{rule.code}`: {rule.summary}. What to do: {runbook_link(rule.code)}"


def reconciliation_check_specs(
    blocking: bool = False, rules: tuple[rc.Rule, ...] = rc.RULES
) -> list[dg.AssetCheckSpec]:
    """One spec per rule of `rules`; `blocking` applies to the ERROR (money) rules only, never to
    WARN ones."""
    return [
        dg.AssetCheckSpec(
            rule.check_name,
            asset=ASSET_KEY_BY_RELATION[rule.relation],
            description=check_description(rule),
            blocking=blocking and rule.is_money,
            metadata={
                cm.RULE: rule.code,
                cm.SEVERITY: rule.severity,
                cm.RUNBOOK: dg.MetadataValue.url(runbook_link(rule.code)),
            },
        )
        for rule in rules
    ]


# With blocking asked for, the money rules' checks are evaluated by a step of their own (the
# gate, `ledger/assets.py`): a failed blocking check fails the step that evaluates it, and Dagster
# then skips everything downstream of that step. Were they the reconciliation's, the marts (which
# read the replay's pools the reconciliation publishes) would be held back with the revenue mart.
GATED_RULES: tuple[rc.Rule, ...] = tuple(rule for rule in rc.RULES if rule.is_money)
UNGATED_RULES: tuple[rc.Rule, ...] = tuple(rule for rule in rc.RULES if not rule.is_money)


def _cell(value: object) -> str:
    if value is None:
        return ""
    return str(value).replace("|", "\\|").replace("\n", " ")


def worst_markdown(summary: RuleSummary) -> str:
    """The ten worst violations of a rule as a Markdown table (empty rule: a one-line note)."""
    if not summary.worst:
        return f"No `{summary.code}` violation."
    columns = WORST_COLUMNS  # what `reconcile.rule_summaries` reads of each worst violation
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in summary.worst:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def new_violations(result: ReconciliationResult) -> Counter:
    """Per rule, the violations first reported at this run's cut-off (`first_detected_at` equals
    `detected_at`): one that persists from yesterday's cut-off is not counted (a re-run at the same
    cut-off counts the same ones again). Counted in the warehouse by `reconcile()`."""
    return Counter(result.new_violations)


def check_results(
    result: ReconciliationResult, rules: tuple[rc.Rule, ...] = rc.RULES
) -> Iterator[dg.AssetCheckResult]:
    """One AssetCheckResult per rule of `rules`, in rule order, from an already computed
    reconciliation."""
    yield from rule_check_results(result.summaries, new_violations(result), result.cutoff_at, rules)


def rule_check_results(
    summaries: Mapping[str, RuleSummary],
    new: Mapping[str, int],
    cutoff_at: dt.datetime,
    rules: tuple[rc.Rule, ...],
) -> Iterator[dg.AssetCheckResult]:
    """One AssetCheckResult per rule of `rules` from its summary (`reconcile.rule_summaries`)."""
    for rule in rules:
        summary = summaries[rule.code]
        top_users = sorted({r["user_id"] for r in summary.worst if r.get("user_id") is not None})
        yield dg.AssetCheckResult(
            asset_key=ASSET_KEY_BY_RELATION[rule.relation],
            check_name=rule.check_name,
            passed=summary.passed,
            severity=SEVERITY[rule.code],
            description=(
                f"{summary.count} `{rule.code}` violation(s) involving {summary.credits} credits. "
                f"What to do: {runbook_link(rule.code)}"
                if summary.count
                else f"no `{rule.code}` violation"
            ),
            metadata={
                cm.RULE: rule.code,
                cm.SEVERITY: rule.severity,
                cm.VIOLATIONS: dg.MetadataValue.int(summary.count),
                cm.NEW_VIOLATIONS: dg.MetadataValue.int(new.get(rule.code, 0)),
                cm.CREDITS_AT_STAKE: dg.MetadataValue.int(summary.credits),
                cm.WORST_USERS: dg.MetadataValue.md(worst_markdown(summary)),
                cm.WORST_USER_IDS: dg.MetadataValue.text(", ".join(str(u) for u in top_users)),
                cm.RUNBOOK: dg.MetadataValue.url(runbook_link(rule.code)),
                cm.DETECTED_AT: dg.MetadataValue.text(cutoff_at.isoformat() + "Z"),
            },
        )
