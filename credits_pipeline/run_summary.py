"""What one run did, read from its Dagster events: the facts behind the CLI's summary.

The events of a run say what materialized, which checks failed, which steps errored, what each
extraction quarantined and whether failing rules alerted nobody (no channel configured); the run's
execution plan says what *should* have been built. Only both together answer the morning's
questions — what was not built, and because of which failed step — so this module folds the
events into one `RunSummary` against the plan. It is pure (no printing, no instance access) so the
rules are unit-tested directly, and the run tags and the terminal summary read the same counts
(one truth): `failed_check_tags` is what the CLI writes on its runs and what the run-status
sensors (`run_tag_sensors.py`) write on every other run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import dagster as dg

from credits_pipeline.check_metadata import NO_ALERT_CHANNEL
from credits_pipeline.extract.common import (
    QUARANTINE_RELATION_METADATA,
    ROWS_LOADED_METADATA,
    ROWS_QUARANTINED_METADATA,
)
from credits_pipeline.run_tags import FAILED_ERROR_CHECKS_TAG, FAILED_WARN_CHECKS_TAG

ROW_COUNT_METADATA = "dagster/row_count"
BLOCKING_CHECK_ERROR = "DagsterAssetCheckFailedError"
ERROR = "ERROR"
WARN = "WARN"


@dataclass(frozen=True)
class PlanShape:
    """The run's plan: which assets each step builds, and which steps each step reads from."""

    step_assets: Mapping[str, tuple[str, ...]]
    step_upstream: Mapping[str, frozenset[str]]

    @classmethod
    def from_snapshot(cls, snapshot) -> PlanShape:
        """From an `ExecutionPlanSnapshot` (stored with every run)."""
        assets: dict[str, tuple[str, ...]] = {}
        upstream: dict[str, frozenset[str]] = {}
        for step in snapshot.steps:
            keys = []
            for output in step.outputs:
                props = output.properties
                if (
                    props is not None
                    and props.asset_key is not None
                    and props.asset_check_key is None
                ):
                    keys.append(props.asset_key.to_user_string())
            assets[step.key] = tuple(dict.fromkeys(keys))
            upstream[step.key] = frozenset(
                handle.step_key for inp in step.inputs for handle in inp.upstream_output_handles
            )
        return cls(assets, upstream)


@dataclass
class StepFailure:
    step: str
    assets: tuple[str, ...]
    message: str


@dataclass
class FailedCheck:
    name: str  # asset/key:check_name
    severity: str  # ERROR or WARN
    description: str = ""


@dataclass
class RunSummary:
    """Everything the end-of-run summary shows, and the exit code it implies."""

    materialized: list[str] = field(default_factory=list)  # asset keys, in order, unique
    rows_loaded: dict[str, int] = field(default_factory=dict)  # asset -> rows the run loaded
    row_counts: dict[str, int] = field(default_factory=dict)  # asset -> rows the relation holds
    quarantined: dict[str, tuple[int, str]] = field(
        default_factory=dict
    )  # asset -> (rows, relation)
    failed_checks: list[FailedCheck] = field(default_factory=list)
    failures: list[StepFailure] = field(default_factory=list)
    blocked_by_checks: list[str] = field(default_factory=list)  # steps whose ERROR checks blocked
    not_built: dict[str, str] = field(default_factory=dict)  # asset -> why
    # alerts are due and no alert channel is configured: the line to print loudly (None if not)
    no_alert_channel: str | None = None
    counted: set[str] = field(default_factory=set)  # assets whose row counts were added

    @property
    def rows_moved(self) -> int:
        return sum(self.rows_loaded.values())

    def failed_check_count(self, severity: str) -> int:
        return count_failed_checks(self.failed_checks, severity)

    def failures_by_cause(self) -> list[tuple[str, list[StepFailure]]]:
        """Failures grouped by their message: one cause printed once, with every step it hit."""
        grouped: dict[str, list[StepFailure]] = {}
        for failure in self.failures:
            grouped.setdefault(failure.message, []).append(failure)
        return list(grouped.items())


def summarize(events: Iterable, plan: PlanShape, failure_message) -> RunSummary:
    """Fold a run's `DagsterEvent`s into a `RunSummary`; `failure_message(event)` gives a cause.

    A partitioned asset gets one materialization per partition, all carrying the step's totals,
    so counts are taken once per asset (the first materialization).
    """
    summary = RunSummary()
    started: set[str] = set()
    failed_steps: set[str] = set()
    for event in events:
        kind = event.event_type
        if kind == dg.DagsterEventType.STEP_START:
            started.add(event.step_key)
        elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
            _record_materialization(summary, event.event_specific_data.materialization)
        elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            check = failed_check(event)
            if check is not None:
                summary.failed_checks.append(check)
        elif kind == dg.DagsterEventType.STEP_FAILURE:
            error = event.event_specific_data.error
            if error is not None and error.cls_name == BLOCKING_CHECK_ERROR:
                summary.blocked_by_checks.append(event.step_key)
            else:
                failed_steps.add(event.step_key)
                summary.failures.append(
                    StepFailure(
                        event.step_key,
                        plan.step_assets.get(event.step_key, ()),
                        failure_message(event),
                    )
                )
    summary.not_built = not_built(
        plan, started, failed_steps, set(summary.blocked_by_checks), set(summary.materialized)
    )
    return summary


def failed_check(event) -> FailedCheck | None:
    """The failed check an `ASSET_CHECK_EVALUATION` event reports; None when it passed (or the
    event is of another kind). A check without a severity counts as ERROR, Dagster's default."""
    if event.event_type != dg.DagsterEventType.ASSET_CHECK_EVALUATION:
        return None
    evaluation = event.event_specific_data
    if evaluation.passed:
        return None
    description = (evaluation.description or "").strip()
    return FailedCheck(
        f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}",
        evaluation.severity.value if evaluation.severity else ERROR,
        description.splitlines()[0] if description else "",
    )


def failed_checks(events: Iterable) -> list[FailedCheck]:
    """Every failed check among a run's `DagsterEvent`s, in event order."""
    return [check for check in map(failed_check, events) if check is not None]


def count_failed_checks(checks: Iterable[FailedCheck], severity: str) -> int:
    return sum(1 for check in checks if check.severity == severity)


def failed_check_tags(checks: Iterable[FailedCheck]) -> dict[str, str]:
    """The run tags that count a run's failed checks by severity (`run_tags.py`)."""
    checks = list(checks)
    return {
        FAILED_ERROR_CHECKS_TAG: str(count_failed_checks(checks, ERROR)),
        FAILED_WARN_CHECKS_TAG: str(count_failed_checks(checks, WARN)),
    }


def counts_again(seen: set[str], mat) -> bool:
    """Whether a materialization's row counts add to what `seen` assets already counted; records it.

    A ranged run's partitions each carry their own day's counts, so they add up; a second
    materialization of an unpartitioned asset is not counted twice. The summary and the CLI's
    progress lines both count with this rule, so they never show two numbers for one step.
    """
    key = mat.asset_key.to_user_string()
    again = key not in seen or mat.partition is not None
    seen.add(key)
    return again


def _record_materialization(summary: RunSummary, mat) -> None:
    """Count one materialization (`counts_again`)."""
    key = mat.asset_key.to_user_string()
    if not counts_again(summary.counted, mat):
        return
    if key not in summary.materialized:
        summary.materialized.append(key)
    meta = mat.metadata

    def add(counts: dict, name: str) -> None:
        if name in meta:
            counts[key] = counts.get(key, 0) + int(meta[name].value)

    if NO_ALERT_CHANNEL in meta:  # both reconciliation relations carry it: said once
        summary.no_alert_channel = str(meta[NO_ALERT_CHANNEL].value)
    add(summary.rows_loaded, ROWS_LOADED_METADATA)
    add(summary.row_counts, ROW_COUNT_METADATA)
    if ROWS_QUARANTINED_METADATA in meta:
        relation = meta.get(QUARANTINE_RELATION_METADATA)
        before = summary.quarantined.get(key, (0, ""))[0]
        summary.quarantined[key] = (
            before + int(meta[ROWS_QUARANTINED_METADATA].value),
            str(relation.value) if relation is not None else "",
        )


def not_built(
    plan: PlanShape,
    started: set[str],
    failed: set[str],
    blocked: set[str],
    materialized: set[str],
) -> dict[str, str]:
    """Each planned asset that did not materialize, and why: the failed step(s) upstream of it.

    A step that never started was skipped because something upstream failed (or was held back by
    a blocking ERROR check); the reason names the nearest such upstream assets, which is where a
    data engineer starts.
    """
    reasons: dict[str, str] = {}
    for step, assets in plan.step_assets.items():
        missing = [a for a in assets if a not in materialized]
        if not missing:
            continue
        if step in failed:
            why = "its step failed (cause below)"
        elif step not in started:
            culprits = _failed_upstream(plan, step, failed | blocked)
            names = sorted({a for s in culprits for a in plan.step_assets.get(s, ()) or (s,)})
            blocked_only = culprits and culprits <= blocked
            if blocked_only:
                why = f"held back: blocking ERROR checks failed on {', '.join(names)}"
            elif names:
                why = f"skipped: upstream {', '.join(names)} failed"
            else:
                why = "skipped: not executed"
        else:
            why = "not materialized by its step"
        for asset in missing:
            reasons[asset] = why
    return reasons


def _failed_upstream(plan: PlanShape, step: str, failed: set[str]) -> set[str]:
    """The failed steps nearest to `step` upstream (not those behind another failed step)."""
    found: set[str] = set()
    seen: set[str] = set()
    todo = list(plan.step_upstream.get(step, ()))
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in failed:
            found.add(current)
        else:
            todo.extend(plan.step_upstream.get(current, ()))
    return found
