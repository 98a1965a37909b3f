"""Alerting on failed runs, through the same channels as the check alerts.

A run that dies (source unreachable, dbt error) writes no check evaluation, so the alert sensor
never sees it; left alone, it would be noticed when freshness fails a day later. A Dagster run-
failure sensor hears every failed run of the code location, and this module turns it into the
same `Digest` the check alerts use: one alert naming the job, the failed steps and their error
messages (the project's errors are already redacted: no URL carries a credential), and the run
link. Run-status sensors keep their own cursor and do not retry a failed evaluation, so a delivery
that fails is logged and makes the tick fail (visible on the sensor's page in the UI).
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from credits_pipeline import settings
from credits_pipeline.alerts.channels import ALL_CHANNEL_VARS, DeliveryError, channels_from_env
from credits_pipeline.alerts.messages import (
    CHANGE_FAILED,
    KIND_RUN_FAILURE,
    SEVERITY_ERROR,
    Alert,
    Digest,
    headline,
)
from credits_pipeline.alerts.sensor import NO_CHANNEL_WARNING, run_url
from credits_pipeline.runbook import RUN_FAILURE_ANCHOR, runbook_link

RUN_FAILURE_SENSOR_NAME = "credits_run_failure_sensor"
RUN_FAILURE_RULE = "run_failure"
MAX_STEP_MESSAGES = 5
MAX_STEP_NAMES = 4
STEP_MESSAGE_CHARS = 500


def step_failure_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """`steps: message` per distinct failure of a run, the user-facing message first.

    A `dg.Failure` carries its description (the project's one clear message); any other error
    its message and, when it wraps one, its cause's. Steps failing for the same reason (every
    extraction when the source is down) share one line, so the cause is read once.
    """
    steps_by_message: dict[str, list[str]] = {}
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        data = event.event_specific_data if event else None
        text = ""
        user_data = getattr(data, "user_failure_data", None)
        if user_data is not None and user_data.description:
            text = user_data.description
        else:
            error = getattr(data, "error", None)
            while error is not None and not text.strip():
                text = error.message
                error = error.cause
        message = " ".join(text.split())[:STEP_MESSAGE_CHARS]
        steps_by_message.setdefault(message, []).append((event.step_key if event else None) or "?")
    lines = []
    for message, steps in steps_by_message.items():
        shown = ", ".join(steps[:MAX_STEP_NAMES]) + (
            f" and {len(steps) - MAX_STEP_NAMES} more" if len(steps) > MAX_STEP_NAMES else ""
        )
        lines.append(f"{shown}: {message}")
    return lines[:MAX_STEP_MESSAGES]


def run_failure_digest(
    instance: dg.DagsterInstance,
    run: dg.DagsterRun,
    failure_message: str | None,
    ui_base_url: str,
    timestamp: float | None = None,
) -> Digest:
    """One alert for a failed run: the job, what failed and why, and where to look."""
    steps = step_failure_messages(instance, run.run_id)
    description = "; ".join(steps) or (failure_message or "The run failed.")
    link = run_url(ui_base_url, run.run_id)
    when = dt.datetime.fromtimestamp(timestamp or dt.datetime.now(dt.UTC).timestamp(), tz=dt.UTC)
    alert = Alert(
        alert_id=f"{run.run_id}:{RUN_FAILURE_RULE}",
        kind=KIND_RUN_FAILURE,
        asset_key=run.job_name,
        check_name=run.job_name,
        severity=SEVERITY_ERROR,
        rule=RUN_FAILURE_RULE,
        count=None,
        credits_at_stake=None,
        worst_users=None,
        description=f"Run {run.run_id} of {run.job_name} failed. {description}",
        run_id=run.run_id,
        run_url=link,
        asset_url=link or f"{ui_base_url}/runs",
        timestamp=when.isoformat(timespec="seconds"),
        change=CHANGE_FAILED,
        state_key=f"{RUN_FAILURE_RULE}:{run.job_name}",
        runbook_url=runbook_link(RUN_FAILURE_ANCHOR),
    )
    return Digest(digest_id=alert.alert_id, run_id=run.run_id, run_url=link, alerts=(alert,))


@dg.run_failure_sensor(
    name=RUN_FAILURE_SENSOR_NAME,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description=(
        "Alerts on every failed run (source unreachable, dbt error, ...) through the alert "
        "channels (Slack, email, JSON webhook, PagerDuty), with the failed steps' messages."
    ),
)
def run_failure_alert_sensor(context: dg.RunFailureSensorContext) -> None:
    event = context.failure_event
    digest = run_failure_digest(
        context.instance,
        context.dagster_run,
        event.message if event else None,
        settings.ui_base_url(),
    )
    channels = channels_from_env()
    alert = digest.alerts[0]
    if not channels:
        context.log.warning(
            f"{NO_CHANNEL_WARNING}: {headline(alert)} reaches nobody. "
            f"Set at least one of {', '.join(ALL_CHANNEL_VARS)}."
        )
        return
    failed: list[str] = []
    for channel in channels:
        try:
            channel.send(digest)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, DeliveryError) else type(exc).__name__
            failed.append(f"{channel.name} ({channel.target}): {reason}")
            continue
        context.log.info(f"Sent run-failure alert {alert.alert_id} via {channel.name}.")
    if failed:
        raise DeliveryError("run-failure alert not delivered by " + "; ".join(failed))
