"""The sensor that turns failed checks and stale assets into alerts, once each, without losing any.

A failed non-blocking asset check does not fail its run, so a run-failure sensor never hears of it:
this sensor reads `ASSET_CHECK_EVALUATION` and `FRESHNESS_STATE_CHANGE` events straight from the
instance's event log, after a position kept in its cursor, and builds one `Alert` per failed
evaluation (and per freshness change into WARN or FAIL). Each alert goes to every channel enabled by
the environment. A delivery that fails stays in the cursor's retry queue and is tried again on the
next tick; the event-log position and the queue are written in the same cursor update, so an alert
is either delivered or queued, never dropped and never rebuilt from an event already read.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from credits_pipeline import settings
from credits_pipeline.alerts.channels import AlertChannel, DeliveryError, channels_from_env
from credits_pipeline.alerts.messages import (
    KIND_CHECK,
    KIND_FRESHNESS,
    SEVERITY_ERROR,
    SEVERITY_WARN,
    Alert,
    headline,
)

ALERT_SENSOR_NAME = "credits_alert_sensor"
MINIMUM_INTERVAL_SECONDS = 60

# How much of the event log one tick reads per event type; the rest waits for the next tick.
PAGE_SIZE = 200
MAX_PAGES_PER_TICK = 5
# With no cursor yet (first deployment, or a reset cursor), alert only on the recent past instead of
# replaying the instance's whole history into Slack; older events are read and skipped.
FIRST_TICK_LOOKBACK_SECONDS = 24 * 60 * 60
# A channel down for days must not grow the cursor without bound; the oldest deliveries go first.
MAX_PENDING_DELIVERIES = 1000
CURSOR_VERSION = 1

CHECK_EVENT = dg.DagsterEventType.ASSET_CHECK_EVALUATION
# FRESHNESS_STATE_CHANGE exists in Dagster 1.13 (emitted by the freshness daemon for assets with a
# `FreshnessPolicy`); looked up by name so that a Dagster without it simply watches checks only.
FRESHNESS_EVENT: dg.DagsterEventType | None = getattr(
    dg.DagsterEventType, "FRESHNESS_STATE_CHANGE", None
)
WATCHED_EVENTS: tuple[dg.DagsterEventType, ...] = tuple(
    event for event in (CHECK_EVENT, FRESHNESS_EVENT) if event is not None
)
FRESHNESS_SEVERITY_BY_STATE = {"FAIL": SEVERITY_ERROR, "WARN": SEVERITY_WARN}
FRESHNESS_CHECK_NAME = "freshness"

# Metadata keys the ledger checks attach to their results (all optional).
COUNT_KEY = "count"
CREDITS_KEY = "credits"
WORST_KEY = "worst"
RULE_KEY = "rule"

RUNLESS = "runless"


@dataclasses.dataclass
class PendingDelivery:
    """One (alert, channel) pair still owed a delivery."""

    channel: str
    alert: Alert
    attempts: int = 0
    last_error: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.alert.alert_id, self.channel)

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "alert": self.alert.to_dict(),
            "attempts": self.attempts,
            "last_error": self.last_error,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PendingDelivery:
        return cls(
            channel=str(raw["channel"]),
            alert=Alert.from_dict(dict(raw["alert"])),
            attempts=int(raw.get("attempts", 0)),
            last_error=str(raw.get("last_error", "")),
        )


@dataclasses.dataclass
class AlertCursor:
    """The sensor's whole memory, stored as the sensor cursor (JSON).

    `positions` maps an event type (`ASSET_CHECK_EVALUATION`, `FRESHNESS_STATE_CHANGE`) to the
    storage id of the last event read; `pending` is the retry queue, oldest first.
    """

    positions: dict[str, int] = dataclasses.field(default_factory=dict)
    pending: list[PendingDelivery] = dataclasses.field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": CURSOR_VERSION,
                "positions": self.positions,
                "pending": [item.to_dict() for item in self.pending],
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, raw: str | None) -> AlertCursor:
        """An empty cursor for None; a malformed cursor is an error, never silently reset (that
        would drop the retry queue and re-alert on the last day)."""
        if not raw:
            return cls()
        document = json.loads(raw)
        return cls(
            positions={
                str(key): int(value) for key, value in document.get("positions", {}).items()
            },
            pending=[PendingDelivery.from_dict(item) for item in document.get("pending", [])],
        )


@dataclasses.dataclass
class TickOutcome:
    """What one evaluation did, for the tick's skip message and for tests."""

    cursor: AlertCursor
    new_alerts: list[Alert]
    delivered: int
    failed_channels: list[str]

    def summary(self) -> str:
        pending = len(self.cursor.pending)
        text = f"{len(self.new_alerts)} new alert(s); {self.delivered} delivery(ies) made"
        if self.failed_channels:
            text += f"; channel(s) failing: {', '.join(sorted(self.failed_channels))}"
        if pending:
            text += f"; {pending} delivery(ies) queued for the next tick"
        return text + "."


def metadata_value(metadata: Mapping[str, Any], key: str) -> Any:
    """The plain value behind a metadata entry (`MetadataValue.value`), or None when absent."""
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


def as_count(value: Any) -> int | None:
    """Counts arrive as int metadata, but a float or a numeric string must not break the alert."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def as_credits(value: Any) -> int | float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else number


def as_text(value: Any) -> str | None:
    """Markdown/text metadata is a string already; tables or JSON are shown as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    try:
        return json.dumps(value, default=str, indent=1)
    except (TypeError, ValueError):
        return str(value)


def iso_utc(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC).isoformat(timespec="seconds")


def asset_url(ui_base_url: str, asset_key: dg.AssetKey) -> str:
    return f"{ui_base_url}/assets/{'/'.join(asset_key.path)}"


def run_url(ui_base_url: str, run_id: str | None) -> str | None:
    """`{CREDITS_UI_BASE_URL}/runs/{run_id}`; None for runless events, which have no run page."""
    return f"{ui_base_url}/runs/{run_id}" if run_id else None


def alert_from_check_event(
    storage_id: int, entry: dg.EventLogEntry, ui_base_url: str
) -> Alert | None:
    """An alert for a failed check evaluation (any asset, any severity); None when it passed.

    The id is `{run_id}:{asset_key}:{check_name}` (plus the partition when there is one), stable
    for the evaluation, so one run yields one alert per failing check. Runless evaluations (reported
    through the API) have no run id and use the storage id instead.
    """
    evaluation = entry.dagster_event.event_specific_data if entry.dagster_event else None
    if not isinstance(evaluation, dg.AssetCheckEvaluation) or evaluation.passed:
        return None
    asset = evaluation.asset_key.to_user_string()
    metadata = evaluation.metadata or {}
    run_id = entry.run_id or None
    alert_id = f"{run_id or f'{RUNLESS}-{storage_id}'}:{asset}:{evaluation.check_name}"
    if evaluation.partition:
        alert_id += f":{evaluation.partition}"
    severity = getattr(evaluation.severity, "value", None) or SEVERITY_ERROR
    return Alert(
        alert_id=alert_id,
        kind=KIND_CHECK,
        asset_key=asset,
        check_name=evaluation.check_name,
        severity=str(severity),
        rule=as_text(metadata_value(metadata, RULE_KEY)) or evaluation.check_name,
        count=as_count(metadata_value(metadata, COUNT_KEY)),
        credits_at_stake=as_credits(metadata_value(metadata, CREDITS_KEY)),
        worst_users=as_text(metadata_value(metadata, WORST_KEY)),
        description=evaluation.description,
        run_id=run_id,
        run_url=run_url(ui_base_url, run_id),
        asset_url=asset_url(ui_base_url, evaluation.asset_key),
        timestamp=iso_utc(entry.timestamp),
    )


def alert_from_freshness_event(
    storage_id: int, entry: dg.EventLogEntry, ui_base_url: str
) -> Alert | None:
    """An alert when an asset's freshness state turns WARN or FAIL; None for any other change
    (recoveries to PASS, UNKNOWN, NOT_APPLICABLE). Freshness changes are runless, so the id is
    the event's storage id."""
    change = entry.dagster_event.event_specific_data if entry.dagster_event else None
    new_state = getattr(getattr(change, "new_state", None), "value", None)
    severity = FRESHNESS_SEVERITY_BY_STATE.get(str(new_state))
    if change is None or severity is None:
        return None
    previous = getattr(getattr(change, "previous_state", None), "value", "UNKNOWN")
    # The data of a freshness event is a FreshnessStateChange, a class dagster does not export.
    key: dg.AssetKey = change.key  # type: ignore[union-attr]
    return Alert(
        alert_id=f"{FRESHNESS_CHECK_NAME}:{key.to_user_string()}:{storage_id}",
        kind=KIND_FRESHNESS,
        asset_key=key.to_user_string(),
        check_name=FRESHNESS_CHECK_NAME,
        severity=severity,
        rule=f"{FRESHNESS_CHECK_NAME} {new_state}",
        count=None,
        credits_at_stake=None,
        worst_users=None,
        description=f"Freshness state changed from {previous} to {new_state}.",
        run_id=None,
        run_url=None,
        asset_url=asset_url(ui_base_url, key),
        timestamp=iso_utc(getattr(change, "state_change_timestamp", None) or entry.timestamp),
    )


ALERT_BUILDERS = {CHECK_EVENT: alert_from_check_event}
if FRESHNESS_EVENT is not None:
    ALERT_BUILDERS[FRESHNESS_EVENT] = alert_from_freshness_event


def read_events(
    instance: dg.DagsterInstance,
    event_type: dg.DagsterEventType,
    after_storage_id: int | None,
    limit: int,
) -> list[tuple[int, dg.EventLogEntry]]:
    """Events of one type with a storage id above the cursor, oldest first.

    On a storage with global ids (PostgreSQL in production, consolidated SQLite) this is the public
    `get_event_records` + `EventRecordsFilter(after_cursor=...)`; Dagster 1.13 marks it deprecated
    but has no `fetch_*` replacement for check evaluations, hence the narrow warning filter. The
    default local SQLite storage is run-sharded: there, `get_event_records` refuses a plain id
    cursor for check evaluations, but every check evaluation and freshness change is mirrored into
    the index shard with a global id, which `get_logs_for_all_runs_by_log_id` reads.
    """
    storage = instance.event_log_storage
    if storage.is_run_sharded:
        entries = storage.get_logs_for_all_runs_by_log_id(
            after_cursor=-1 if after_storage_id is None else after_storage_id,
            dagster_event_type=event_type,
            limit=limit,
        )
        return sorted(entries.items())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        records = instance.get_event_records(
            dg.EventRecordsFilter(event_type=event_type, after_cursor=after_storage_id),
            limit=limit,
            ascending=True,
        )
    return [(record.storage_id, record.event_log_entry) for record in records]


def collect_new_alerts(
    instance: dg.DagsterInstance,
    cursor: AlertCursor,
    ui_base_url: str,
    now: float,
) -> list[Alert]:
    """Read every watched event type past its position, advance the positions, build the alerts."""
    alerts: list[Alert] = []
    for event_type in WATCHED_EVENTS:
        position = cursor.positions.get(event_type.value)
        oldest_wanted = now - FIRST_TICK_LOOKBACK_SECONDS if position is None else None
        build = ALERT_BUILDERS[event_type]
        for _ in range(MAX_PAGES_PER_TICK):
            page = read_events(instance, event_type, position, PAGE_SIZE)
            for storage_id, entry in page:
                position = storage_id
                if oldest_wanted is not None and entry.timestamp < oldest_wanted:
                    continue
                alert = build(storage_id, entry, ui_base_url)
                if alert is not None:
                    alerts.append(alert)
            if len(page) < PAGE_SIZE:
                break
        if position is not None:
            cursor.positions[event_type.value] = position
    return alerts


def deliver(
    queue: Sequence[PendingDelivery],
    channels: Sequence[AlertChannel],
    log: logging.Logger,
) -> tuple[list[PendingDelivery], int, list[str]]:
    """Try each queued delivery once; return what is still owed, the number sent, failed channels.

    After a channel fails, the rest of its deliveries wait for the next tick untried, so one
    unreachable endpoint costs one timeout per tick, not one per alert.
    """
    by_name = {channel.name: channel for channel in channels}
    still_pending: list[PendingDelivery] = []
    failed: list[str] = []
    unconfigured: dict[str, int] = {}
    delivered = 0
    for item in queue:
        channel = by_name.get(item.channel)
        if channel is None:
            unconfigured[item.channel] = unconfigured.get(item.channel, 0) + 1
            still_pending.append(item)
            continue
        if item.channel in failed:
            still_pending.append(item)
            continue
        try:
            channel.send(item.alert)
        except Exception as exc:  # any sender error, including a bug, must queue the alert
            reason = str(exc) if isinstance(exc, DeliveryError) else type(exc).__name__
            item.attempts += 1
            item.last_error = reason
            failed.append(item.channel)
            still_pending.append(item)
            log.warning(
                f"Alert channel {channel.name} ({channel.target}) failed: {reason}; "
                f"alert {item.alert.alert_id} (attempt {item.attempts}) and the channel's other "
                "deliveries will be retried on the next tick."
            )
            continue
        delivered += 1
        log.info(f"Sent alert {item.alert.alert_id} via {channel.name} ({channel.target}).")
    for name, count in unconfigured.items():
        log.warning(
            f"Alert channel {name} is no longer configured; keeping {count} undelivered "
            "alert(s) until it is configured again."
        )
    return still_pending, delivered, failed


def bounded(queue: list[PendingDelivery], log: logging.Logger) -> list[PendingDelivery]:
    """Cap the retry queue so the cursor stays small, dropping the oldest deliveries loudly."""
    overflow = len(queue) - MAX_PENDING_DELIVERIES
    if overflow <= 0:
        return queue
    for item in queue[:overflow]:
        log.error(
            f"Dropping undelivered alert {item.alert.alert_id} for {item.channel} after "
            f"{item.attempts} attempt(s): the retry queue is full ({MAX_PENDING_DELIVERIES})."
        )
    return queue[overflow:]


def evaluate_alerts(
    instance: dg.DagsterInstance,
    cursor_json: str | None,
    channels: Sequence[AlertChannel],
    log: logging.Logger,
    ui_base_url: str,
    now: float | None = None,
) -> TickOutcome:
    """One tick: read new events, queue their alerts behind the retries, deliver, keep the rest."""
    cursor = AlertCursor.from_json(cursor_json)
    now = time.time() if now is None else now
    new_alerts = collect_new_alerts(instance, cursor, ui_base_url, now)
    if new_alerts and not channels:
        for alert in new_alerts:
            log.warning(f"No alert channel is configured; not sent: {headline(alert)}")
    queue: list[PendingDelivery] = []
    seen: set[tuple[str, str]] = set()
    candidates = list(cursor.pending) + [
        PendingDelivery(channel=channel.name, alert=alert)
        for alert in new_alerts
        for channel in channels
    ]
    for item in candidates:
        if item.key not in seen:
            seen.add(item.key)
            queue.append(item)
    still_pending, delivered, failed = deliver(queue, channels, log)
    cursor.pending = bounded(still_pending, log)
    return TickOutcome(
        cursor=cursor, new_alerts=new_alerts, delivered=delivered, failed_channels=failed
    )


@dg.sensor(
    name=ALERT_SENSOR_NAME,
    minimum_interval_seconds=MINIMUM_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Alerts on failed asset checks and on freshness turning WARN/FAIL, once per failing check "
        "per run, via the channels enabled by CREDITS_SLACK_WEBHOOK_URL, CREDITS_SMTP_HOST + "
        "CREDITS_ALERT_EMAIL_TO and CREDITS_ALERT_WEBHOOK_URL; failed deliveries are retried."
    ),
)
def alert_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    outcome = evaluate_alerts(
        instance=context.instance,
        cursor_json=context.cursor,
        channels=channels_from_env(),
        log=context.log,
        ui_base_url=settings.ui_base_url(),
    )
    context.update_cursor(outcome.cursor.to_json())
    return dg.SkipReason(outcome.summary())
