"""The 13 ledger rules as Dagster asset checks, evaluated by the reconciliation multi-asset itself.

A check that re-read 5M ledger rows would double the cost of every run, and the reconciliation has
already counted every violation; so the checks are declared as `check_specs` of the multi-asset and
their results are built from its `ReconciliationResult`. Each result carries what a person needs to
act: how many violations, how many credits they involve, the ten worst as a Markdown table, and
the runbook section saying what to do next. The metadata keys are `check_metadata`'s, which the
alert sensor reads: the two sides cannot drift apart.
Checks never block the report itself (contract section 4); `blocking=True` is only for the money
rules, so that the lead can make the revenue mart wait on them when
`settings.block_revenue_on_error()` asks for it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import dagster as dg

from credits_pipeline import check_metadata as cm
from credits_pipeline import settings
from credits_pipeline.ledger import rules_catalog as rc
from credits_pipeline.ledger.reconcile import ReconciliationResult, RuleSummary
from credits_pipeline.runbook import runbook_link

RECONCILIATION_KEY = dg.AssetKey([rc.MARTS_SCHEMA, rc.RECONCILIATION_TABLE])
ANOMALIES_KEY = dg.AssetKey([rc.MARTS_SCHEMA, rc.ANOMALIES_TABLE])
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


def reconciliation_check_specs(blocking: bool = False) -> list[dg.AssetCheckSpec]:
    """One spec per rule; `blocking` applies to the ERROR (money) rules only, never to WARN ones."""
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
        for rule in rc.RULES
    ]


def _cell(value: object) -> str:
    if value is None:
        return ""
    return str(value).replace("|", "\\|").replace("\n", " ")


def worst_markdown(summary: RuleSummary) -> str:
    """The ten worst violations of a rule as a Markdown table (empty rule: a one-line note)."""
    if not summary.worst:
        return f"No `{summary.code}` violation."
    columns = (
        "user_id",
        "credit_history_id",
        "entity_type",
        "entity_id",
        "expected",
        "actual",
        "credits",
        "detail",
    )
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in summary.worst:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def new_violations(result: ReconciliationResult) -> Counter:
    """Per rule, the violations first reported at this run's cut-off (`first_detected_at` equals
    `detected_at`): one that persists from yesterday's cut-off is not counted (a re-run at the same
    cut-off counts the same ones again). Counted in the warehouse by `reconcile()`."""
    return Counter(result.new_violations)


def check_results(result: ReconciliationResult) -> Iterator[dg.AssetCheckResult]:
    """One AssetCheckResult per rule, in rule order, from an already computed reconciliation."""
    new = new_violations(result)
    for rule in rc.RULES:
        summary = result.summaries[rule.code]
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
                cm.NEW_VIOLATIONS: dg.MetadataValue.int(new[rule.code]),
                cm.CREDITS_AT_STAKE: dg.MetadataValue.int(summary.credits),
                cm.WORST_USERS: dg.MetadataValue.md(worst_markdown(summary)),
                cm.WORST_USER_IDS: dg.MetadataValue.text(", ".join(str(u) for u in top_users)),
                cm.RUNBOOK: dg.MetadataValue.url(runbook_link(rule.code)),
                cm.DETECTED_AT: dg.MetadataValue.text(result.cutoff_at.isoformat() + "Z"),
            },
        )
