"""The sensor that turns changes of check and freshness state into alerts, without losing any.

A failed non-blocking asset check does not fail its run, so a run-failure sensor never hears of it:
this sensor reads `ASSET_CHECK_EVALUATION` and `FRESHNESS_STATE_CHANGE` events straight from the
instance's event log, after a position kept in its cursor. It alerts on *state*, not on every run:
the cursor remembers, per check (asset, check name and partition), whether it failed last time and
with how many violations and credits. A check that starts failing is `new`; one that fails with
more violations, more credits or a higher severity is `worse`; one that passes again is `resolved`;
a check failing unchanged is not repeated (the digest lists it as still failing). The changes of
one run go out as ONE digest per channel, once the run has finished (so a digest is never half a
run). A delivery that fails stays in the cursor's retry queue and is tried again on the next tick;
the event-log position, the states and the queue are written in the same cursor update, so a
change is either delivered or queued, never dropped and never re-sent.
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

from credits_pipeline import check_metadata as cm
from credits_pipeline import settings
from credits_pipeline.alerts.channels import (
    ALL_CHANNEL_VARS,
    AlertChannel,
    DeliveryError,
    channels_from_env,
)
from credits_pipeline.alerts.messages import (
    CHANGE_NEW,
    CHANGE_RESOLVED,
    CHANGE_WORSE,
    KIND_CHECK,
    KIND_FRESHNESS,
    SEVERITY_ERROR,
    SEVERITY_WARN,
    Alert,
    Digest,
    digest_title,
    headline,
)

ALERT_SENSOR_NAME = "credits_alert_sensor"
MINIMUM_INTERVAL_SECONDS = 60

# How much of the event log one tick reads per event type; the rest waits for the next tick.
PAGE_SIZE = 200
MAX_PAGES_PER_TICK = 5
# With no cursor yet (first deployment, or a reset cursor), alert only on the recent past instead of
# replaying the instance's whole history into Slack; older events only set the remembered states.
FIRST_TICK_LOOKBACK_SECONDS = 24 * 60 * 60
# A channel down for days must not grow the cursor without bound; the oldest deliveries go first.
MAX_PENDING_DELIVERIES = 200
CURSOR_VERSION = 2

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
SEVERITY_RANK = {SEVERITY_WARN: 1, SEVERITY_ERROR: 2}

RUNLESS = "runless"
NO_CHANNEL_WARNING = "NO ALERT CHANNEL IS CONFIGURED"


@dataclasses.dataclass(frozen=True)
class CheckState:
    """What the sensor remembers of one check between runs."""

    failing: bool
    severity: str = SEVERITY_ERROR
    count: int | None = None
    credits: float | int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CheckState:
        return cls(
            failing=bool(raw.get("failing")),
            severity=str(raw.get("severity") or SEVERITY_ERROR),
            count=raw.get("count"),
            credits=raw.get("credits"),
        )


def _grew(now: float | int | None, before: float | int | None) -> bool:
    return now is not None and now > (before or 0)


def state_change(previous: CheckState | None, current: CheckState) -> str | None:
    """`new`, `worse`, `resolved`, or None when nothing worth telling happened.

    Why state and not events: a rule failing for a week is one alert, not seven; a rule that gets
    worse (more violations, more credits, a higher severity) is news again; a fix is news too.
    """
    was_failing = previous is not None and previous.failing
    if current.failing and not was_failing:
        return CHANGE_NEW
    if current.failing and was_failing:
        assert previous is not None
        worse = (
            _grew(current.count, previous.count)
            or _grew(current.credits, previous.credits)
            or SEVERITY_RANK.get(current.severity, 0) > SEVERITY_RANK.get(previous.severity, 0)
        )
        return CHANGE_WORSE if worse else None
    if was_failing and not current.failing:
        return CHANGE_RESOLVED
    return None


@dataclasses.dataclass(frozen=True)
class Observation:
    """One evaluation read from the event log: the check's new state, and its alert if it
    changed."""

    storage_id: int
    run_id: str | None
    state_key: str
    state: CheckState
    alert: Alert  # with change=new; the sensor sets the real change and the previous numbers


@dataclasses.dataclass
class PendingDelivery:
    """One (digest, channel) pair still owed a delivery."""

    channel: str
    digest: Digest
    attempts: int = 0
    last_error: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.digest.digest_id, self.channel)

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "digest": self.digest.to_dict(),
            "attempts": self.attempts,
            "last_error": self.last_error,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PendingDelivery:
        if "digest" in raw:
            digest = Digest.from_dict(dict(raw["digest"]))
        else:  # a version-1 cursor queued single alerts
            alert = Alert.from_dict(dict(raw["alert"]))
            digest = Digest(alert.alert_id, alert.run_id, alert.run_url, (alert,))
        return cls(
            channel=str(raw["channel"]),
            digest=digest,
            attempts=int(raw.get("attempts", 0)),
            last_error=str(raw.get("last_error", "")),
        )


@dataclasses.dataclass
class AlertCursor:
    """The sensor's whole memory, stored as the sensor cursor (JSON).

    `positions` maps an event type (`ASSET_CHECK_EVALUATION`, `FRESHNESS_STATE_CHANGE`) to the
    storage id of the last event read; `states` maps a check's state key to its last `CheckState`;
    `pending` is the retry queue, oldest first.
    """

    positions: dict[str, int] = dataclasses.field(default_factory=dict)
    pending: list[PendingDelivery] = dataclasses.field(default_factory=list)
    states: dict[str, CheckState] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": CURSOR_VERSION,
                "positions": self.positions,
                "states": {key: state.to_dict() for key, state in self.states.items()},
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
            states={
                str(key): CheckState.from_dict(value)
                for key, value in document.get("states", {}).items()
            },
        )


@dataclasses.dataclass
class TickOutcome:
    """What one evaluation did, for the tick's skip message and for tests."""

    cursor: AlertCursor
    digests: list[Digest]
    delivered: int
    failed_channels: list[str]
    channels_configured: int = 1

    @property
    def new_alerts(self) -> list[Alert]:
        return [alert for digest in self.digests for alert in digest.alerts]

    def summary(self) -> str:
        pending = len(self.cursor.pending)
        text = (
            f"{len(self.new_alerts)} alert(s) in {len(self.digests)} digest(s); "
            f"{self.delivered} delivery(ies) made"
        )
        if self.digests and not self.channels_configured:
            text = (
                f"{NO_CHANNEL_WARNING}: {len(self.new_alerts)} alert(s) in "
                f"{len(self.digests)} digest(s) reached nobody (set one of "
                f"{', '.join(ALL_CHANNEL_VARS)})"
            )
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


def observe_check_event(
    storage_id: int, entry: dg.EventLogEntry, ui_base_url: str
) -> Observation | None:
    """A check evaluation (passed or not) as the check's new state and its would-be alert.

    The numbers come from the metadata keys of `check_metadata`, the ones the ledger checks write.
    The alert id is `{run_id}:{asset_key}:{check_name}` (plus the partition), stable for the
    evaluation; the state key leaves out the run, so it names the problem across runs.
    """
    evaluation = entry.dagster_event.event_specific_data if entry.dagster_event else None
    if not isinstance(evaluation, dg.AssetCheckEvaluation):
        return None
    asset = evaluation.asset_key.to_user_string()
    metadata = evaluation.metadata or {}
    run_id = entry.run_id or None
    state_key = f"{asset}:{evaluation.check_name}"
    if evaluation.partition:
        state_key += f":{evaluation.partition}"
    alert_id = f"{run_id or f'{RUNLESS}-{storage_id}'}:{state_key}"
    severity = str(getattr(evaluation.severity, "value", None) or SEVERITY_ERROR)
    count = as_count(metadata_value(metadata, cm.VIOLATIONS))
    credits = as_credits(metadata_value(metadata, cm.CREDITS_AT_STAKE))
    alert = Alert(
        alert_id=alert_id,
        kind=KIND_CHECK,
        asset_key=asset,
        check_name=evaluation.check_name,
        severity=severity,
        rule=as_text(metadata_value(metadata, cm.RULE)) or evaluation.check_name,
        count=count,
        credits_at_stake=credits,
        worst_users=as_text(metadata_value(metadata, cm.WORST_USERS)),
        description=evaluation.description,
        run_id=run_id,
        run_url=run_url(ui_base_url, run_id),
        asset_url=asset_url(ui_base_url, evaluation.asset_key),
        timestamp=iso_utc(entry.timestamp),
        state_key=state_key,
        runbook_url=as_text(metadata_value(metadata, cm.RUNBOOK)),
        new_count=as_count(metadata_value(metadata, cm.NEW_VIOLATIONS)),
    )
    state = CheckState(
        failing=not evaluation.passed, severity=severity, count=count, credits=credits
    )
    return Observation(storage_id, run_id, state_key, state, alert)


def observe_freshness_event(
    storage_id: int, entry: dg.EventLogEntry, ui_base_url: str
) -> Observation | None:
    """An asset's freshness state as a check state: WARN/FAIL fail, PASS passes; UNKNOWN and
    NOT_APPLICABLE say nothing. Freshness changes are runless."""
    change = entry.dagster_event.event_specific_data if entry.dagster_event else None
    new_state = str(getattr(getattr(change, "new_state", None), "value", None))
    if change is None or (new_state not in FRESHNESS_SEVERITY_BY_STATE and new_state != "PASS"):
        return None
    severity = FRESHNESS_SEVERITY_BY_STATE.get(new_state, SEVERITY_WARN)
    previous = getattr(getattr(change, "previous_state", None), "value", "UNKNOWN")
    # The data of a freshness event is a FreshnessStateChange, a class dagster does not export.
    key: dg.AssetKey = change.key  # type: ignore[union-attr]
    state_key = f"{FRESHNESS_CHECK_NAME}:{key.to_user_string()}"
    alert = Alert(
        alert_id=f"{state_key}:{storage_id}",
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
        state_key=state_key,
    )
    state = CheckState(failing=new_state in FRESHNESS_SEVERITY_BY_STATE, severity=severity)
    return Observation(storage_id, None, state_key, state, alert)


OBSERVERS = {CHECK_EVENT: observe_check_event}
if FRESHNESS_EVENT is not None:
    OBSERVERS[FRESHNESS_EVENT] = observe_freshness_event


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


class RunFinished:
    """Whether a run has finished, asked once per run and tick (a run's digest waits for its
    end)."""

    def __init__(self, instance: dg.DagsterInstance):
        self._instance = instance
        self._known: dict[str, bool] = {}

    def __call__(self, run_id: str | None) -> bool:
        if not run_id:
            return True
        if run_id not in self._known:
            run = self._instance.get_run_by_id(run_id)
            self._known[run_id] = run is None or run.is_finished
        return self._known[run_id]


def collect_observations(
    instance: dg.DagsterInstance, cursor: AlertCursor, now: float, ui_base_url: str
) -> list[tuple[Observation, bool]]:
    """Every watched event past its position, up to the first one of a run still going on.

    Returns (observation, recent) pairs in event-log order; `recent` is False for events older than
    the first tick's look-back, which only set the remembered state.
    """
    finished = RunFinished(instance)
    observed: list[tuple[Observation, bool]] = []
    for event_type in WATCHED_EVENTS:
        position = cursor.positions.get(event_type.value)
        oldest_wanted = now - FIRST_TICK_LOOKBACK_SECONDS if position is None else None
        observe = OBSERVERS[event_type]
        blocked = False
        for _ in range(MAX_PAGES_PER_TICK):
            page = read_events(instance, event_type, position, PAGE_SIZE)
            for storage_id, entry in page:
                if not finished(entry.run_id or None):
                    blocked = True  # this run's digest waits until the run ends
                    break
                position = storage_id
                observation = observe(storage_id, entry, ui_base_url)
                if observation is not None:
                    recent = oldest_wanted is None or entry.timestamp >= oldest_wanted
                    observed.append((observation, recent))
            if blocked or len(page) < PAGE_SIZE:
                break
        if position is not None:
            cursor.positions[event_type.value] = position
    return observed


def build_digests(
    observed: Sequence[tuple[Observation, bool]], cursor: AlertCursor
) -> list[Digest]:
    """Compare each observation with the remembered state; gather the changes into one digest
    per run (runless events share one digest per tick). Updates `cursor.states`."""
    changes: dict[str, list[Alert]] = {}
    still: dict[str, list[str]] = {}
    run_urls: dict[str, str | None] = {}
    run_ids: dict[str, str | None] = {}
    for observation, recent in observed:
        previous = cursor.states.get(observation.state_key)
        cursor.states[observation.state_key] = observation.state
        group = observation.run_id or f"{RUNLESS}-{observation.storage_id}"
        if not observation.run_id:
            group = next((g for g in changes if g.startswith(RUNLESS)), group)
        change = state_change(previous, observation.state)
        if not recent:
            continue
        if change is None:
            if observation.state.failing:
                still.setdefault(group, []).append(observation.state_key)
            continue
        alert = dataclasses.replace(
            observation.alert,
            change=change,
            previous_count=previous.count if previous else None,
            previous_credits_at_stake=previous.credits if previous else None,
        )
        if change == CHANGE_RESOLVED and previous is not None:
            alert = dataclasses.replace(alert, severity=previous.severity)
        changes.setdefault(group, []).append(alert)
        run_urls[group] = alert.run_url
        run_ids[group] = observation.run_id
    return [
        Digest(
            digest_id=group,
            run_id=run_ids[group],
            run_url=run_urls[group],
            alerts=tuple(alerts),
            still_failing=tuple(still.get(group, [])),
        )
        for group, alerts in changes.items()
    ]


def deliver(
    queue: Sequence[PendingDelivery],
    channels: Sequence[AlertChannel],
    log: logging.Logger,
) -> tuple[list[PendingDelivery], int, list[str]]:
    """Try each queued delivery once; return what is still owed, the number sent, failed channels.

    After a channel fails, the rest of its deliveries wait for the next tick untried, so one
    unreachable endpoint costs one timeout per tick, not one per digest.
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
            channel.send(item.digest)
        except Exception as exc:  # any sender error, including a bug, must queue the digest
            reason = str(exc) if isinstance(exc, DeliveryError) else type(exc).__name__
            item.attempts += 1
            item.last_error = reason
            failed.append(item.channel)
            still_pending.append(item)
            log.warning(
                f"Alert channel {channel.name} ({channel.target}) failed: {reason}; "
                f"digest {item.digest.digest_id} (attempt {item.attempts}) and the channel's other "
                "deliveries will be retried on the next tick."
            )
            continue
        delivered += 1
        log.info(
            f"Sent digest {item.digest.digest_id} ({len(item.digest.alerts)} alert(s)) via "
            f"{channel.name} ({channel.target})."
        )
    for name, count in unconfigured.items():
        log.warning(
            f"Alert channel {name} is no longer configured; keeping {count} undelivered "
            "digest(s) until it is configured again."
        )
    return still_pending, delivered, failed


def bounded(queue: list[PendingDelivery], log: logging.Logger) -> list[PendingDelivery]:
    """Cap the retry queue so the cursor stays small, dropping the oldest deliveries loudly."""
    overflow = len(queue) - MAX_PENDING_DELIVERIES
    if overflow <= 0:
        return queue
    for item in queue[:overflow]:
        log.error(
            f"Dropping undelivered digest {item.digest.digest_id} for {item.channel} after "
            f"{item.attempts} attempt(s): the retry queue is full ({MAX_PENDING_DELIVERIES})."
        )
    return queue[overflow:]


def warn_no_channel(digests: Sequence[Digest], log: logging.Logger) -> None:
    """Alerts are due and nobody will get them: say so as loudly as a sensor can."""
    alerts = sum(len(d.alerts) for d in digests)
    log.warning(
        f"{NO_CHANNEL_WARNING}: {alerts} alert(s) in {len(digests)} digest(s) are due and reach "
        f"nobody. Set at least one of {', '.join(ALL_CHANNEL_VARS)}."
    )
    for digest in digests:
        for alert in digest.alerts:
            log.warning(f"Not sent (no channel): {headline(alert)}")


def evaluate_alerts(
    instance: dg.DagsterInstance,
    cursor_json: str | None,
    channels: Sequence[AlertChannel],
    log: logging.Logger,
    ui_base_url: str,
    now: float | None = None,
) -> TickOutcome:
    """One tick: read new events, turn changes into digests, queue them behind the retries,
    deliver, keep the rest."""
    cursor = AlertCursor.from_json(cursor_json)
    now = time.time() if now is None else now
    digests = build_digests(collect_observations(instance, cursor, now, ui_base_url), cursor)
    if digests and not channels:
        warn_no_channel(digests, log)
    for digest in digests:
        log.info(f"Digest {digest.digest_id}: {digest_title(digest)}")
    queue: list[PendingDelivery] = []
    seen: set[tuple[str, str]] = set()
    candidates = list(cursor.pending) + [
        PendingDelivery(channel=channel.name, digest=digest)
        for digest in digests
        for channel in channels
    ]
    for item in candidates:
        if item.key not in seen:
            seen.add(item.key)
            queue.append(item)
    still_pending, delivered, failed = deliver(queue, channels, log)
    cursor.pending = bounded(still_pending, log)
    return TickOutcome(
        cursor=cursor,
        digests=digests,
        delivered=delivered,
        failed_channels=failed,
        channels_configured=len(channels),
    )


@dg.sensor(
    name=ALERT_SENSOR_NAME,
    minimum_interval_seconds=MINIMUM_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Alerts when a check starts failing or gets worse, and when it passes again (freshness "
        "too): one digest per finished run, via the channels enabled by CREDITS_SLACK_WEBHOOK_URL, "
        "CREDITS_SMTP_HOST + CREDITS_ALERT_EMAIL_TO, CREDITS_ALERT_WEBHOOK_URL and "
        "CREDITS_PAGERDUTY_ROUTING_KEY; failed deliveries are retried; with no channel configured "
        "the tick says so."
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
