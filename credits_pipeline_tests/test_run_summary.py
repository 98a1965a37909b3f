"""The rules behind the CLI's summary: what was not built and why, a cause once, which runs died."""

from __future__ import annotations

import dagster as dg

from credits_pipeline.alerts import channels as ch
from credits_pipeline.ledger import reconciliation_assets
from credits_pipeline.run_summary import (
    PlanShape,
    RunSummary,
    StepFailure,
    counts_again,
    not_built,
    summarize,
)
from credits_pipeline.run_tags import (
    HOST_TAG,
    PID_TAG,
    TRIGGER_CLI,
    TRIGGER_TAG,
    run_process_is_gone,
)
from credits_pipeline_tests.test_ledger_assets import materialize, warehouse  # noqa: F401

# raw__users ─┐
#             ├─► dbt ─► marts__revenue
# raw__plans ─┘     └──► ledger
PLAN = PlanShape(
    step_assets={
        "raw__users": ("raw/users",),
        "raw__plans": ("raw/plans",),
        "dbt": ("credits/credit_histories", "marts/user_credit_daily"),
        "marts__revenue": ("marts/revenue_attribution",),
        "ledger": ("marts/ledger_anomalies",),
    },
    step_upstream={
        "raw__users": frozenset(),
        "raw__plans": frozenset(),
        "dbt": frozenset({"raw__users", "raw__plans"}),
        "marts__revenue": frozenset({"dbt"}),
        "ledger": frozenset({"dbt"}),
    },
)
EVERYTHING_ELSE = {"raw/users", "credits/credit_histories", "marts/user_credit_daily"}


def test_each_partition_of_a_ranged_run_counts_and_an_unpartitioned_asset_counts_once():
    seen: set[str] = set()
    ledger = [
        dg.AssetMaterialization(asset_key=["raw", "credit_histories"], partition=day)
        for day in ("2025-01-01", "2025-01-02")
    ]
    users = dg.AssetMaterialization(asset_key=["raw", "users"])
    assert [counts_again(seen, m) for m in (*ledger, users, users)] == [True, True, True, False]
    assert seen == {"raw/credit_histories", "raw/users"}


def test_an_asset_skipped_behind_a_failed_step_names_that_failed_upstream_asset():
    reasons = not_built(
        PLAN,
        started={"raw__users", "raw__plans"},
        failed={"raw__plans"},
        blocked=set(),
        materialized={"raw/users"},
    )
    assert reasons["raw/plans"] == "its step failed (cause below)"
    # the nearest failure is named, not every step on the way
    for asset in (
        "credits/credit_histories",
        "marts/revenue_attribution",
        "marts/ledger_anomalies",
    ):
        assert reasons[asset] == "skipped: upstream raw/plans failed"
    assert "raw/users" not in reasons


def test_an_asset_held_back_by_a_blocking_check_says_so_and_nothing_built_is_listed():
    reasons = not_built(
        PLAN,
        started={"raw__users", "raw__plans", "dbt", "ledger"},
        failed=set(),
        blocked={"dbt"},
        materialized=EVERYTHING_ELSE | {"raw/plans", "marts/ledger_anomalies"},
    )
    assert reasons == {
        "marts/revenue_attribution": "held back: blocking ERROR checks failed on "
        "credits/credit_histories, marts/user_credit_daily"
    }


def test_one_cause_that_failed_several_steps_is_reported_once():
    summary = RunSummary(
        failures=[
            StepFailure("raw__users", ("raw/users",), "cannot connect to the source database x"),
            StepFailure("raw__plans", ("raw/plans",), "cannot connect to the source database x"),
            StepFailure("dbt", (), "dbt failed"),
        ]
    )
    grouped = summary.failures_by_cause()
    assert [(message, [f.step for f in failures]) for message, failures in grouped] == [
        ("cannot connect to the source database x", ["raw__users", "raw__plans"]),
        ("dbt failed", ["dbt"]),
    ]


def test_only_a_cli_run_of_this_host_whose_process_is_gone_counts_as_interrupted():
    tags = {TRIGGER_TAG: TRIGGER_CLI, HOST_TAG: "h1", PID_TAG: "4242"}
    assert run_process_is_gone(tags, "h1", alive=lambda pid: False)
    assert not run_process_is_gone(tags, "h1", alive=lambda pid: True)
    assert not run_process_is_gone(tags, "other-host", alive=lambda pid: False)
    assert not run_process_is_gone({**tags, TRIGGER_TAG: "schedule"}, "h1", alive=lambda pid: False)
    assert not run_process_is_gone(
        {TRIGGER_TAG: TRIGGER_CLI, HOST_TAG: "h1"}, "h1", alive=lambda pid: False
    )


def test_a_run_whose_failing_rules_alert_nobody_says_so_in_its_summary(
    warehouse,  # the fixture of test_ledger_assets.py: a ledger with 4 failing rules
    tmp_path,
    monkeypatch,
):
    for name in (*ch.ALL_CHANNEL_VARS, ch.PAGERDUTY_EVENTS_URL_VAR):
        monkeypatch.delenv(name, raising=False)
    silent = materialize(reconciliation_assets, warehouse, tmp_path / "silent")
    monkeypatch.setenv(ch.ALERT_WEBHOOK_URL_VAR, "http://127.0.0.1:9/hook")
    heard = materialize(reconciliation_assets, warehouse, tmp_path / "heard")

    def summary_of(result) -> RunSummary:
        return summarize(result.all_events, PlanShape({}, {}), lambda event: event.message)

    line = summary_of(silent).no_alert_channel
    assert line is not None
    assert line.startswith("No alert channel is configured: 4 failing rule(s) alert nobody")
    assert f"`{ch.ALL_CHANNEL_VARS[0]}`" in line and "**" not in line  # plain text for a terminal
    assert summary_of(heard).no_alert_channel is None
