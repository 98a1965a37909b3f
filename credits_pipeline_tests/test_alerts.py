"""The alert sensors, end to end, against a real Dagster instance, SMTP server and HTTP receiver.

Failed non-blocking checks leave the run green, so the only proof that alerting works is to run a
real materialization into a real instance, evaluate the sensor on that instance's event log and see
what really arrives at a real SMTP server (aiosmtpd) and a real HTTP endpoint (Slack, the JSON
webhook and PagerDuty share one local receiver). The failing checks are the REAL ledger checks:
a multi-asset that reconciles a small hand-built ledger with `reconcile()` and yields the real
`check_results`, so a metadata key renamed on either side fails here. Nothing is patched or
mocked: channels are configured through their environment variables, and "a channel is down" or
"the source is unreachable" means a port nobody listens on.
"""

import datetime as dt
import json
import socket
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import duckdb
import pytest
from aiosmtpd.controller import Controller
from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange
from dagster._core.definitions.instigation_logger import get_instigation_log_records

from credits_pipeline import check_metadata as cm
from credits_pipeline.alerts import (
    ALERT_SENSOR_NAME,
    RUN_FAILURE_SENSOR_NAME,
    alert_sensor,
    channels_from_env,
    run_failure_alert_sensor,
)
from credits_pipeline.alerts import channels as ch
from credits_pipeline.alerts.messages import CHANGE_NEW, CHANGE_RESOLVED, CHANGE_WORSE
from credits_pipeline.alerts.sensor import (
    NO_CHANNEL_WARNING,
    AlertCursor,
    CheckState,
    state_change,
)
from credits_pipeline.ledger import rules_catalog as rc
from credits_pipeline.ledger.checks import (
    ANOMALIES_KEY,
    RECONCILIATION_KEY,
    check_results,
    reconciliation_check_specs,
)
from credits_pipeline.ledger.fixtures import ledger_row, load_inputs
from credits_pipeline.ledger.reconcile import reconcile
from credits_pipeline.runbook import RUN_FAILURE_ANCHOR, RUNBOOK_PATH
from credits_pipeline.settings import UI_BASE_URL_VAR
from credits_pipeline_tests.harness import run_extraction, run_status_context

LOCALHOST = "127.0.0.1"
UI_BASE = "http://dagster.test:3000"
SLACK_PATH = "/services/T000/B000/very-secret-token"
WEBHOOK_PATH = "/hooks/credits-alerts"
PAGERDUTY_PATH = "/v2/enqueue"
PAGERDUTY_KEY = "R0UT1NGKEYSECRET"
EMAIL_FROM = "credits@pipeline.test"
EMAIL_TO = "oncall@pipeline.test"
REPOSITORY_NAME = "__repository__"

CUTOFF = dt.datetime(2025, 6, 1)
CHAIN_CHECK = rc.CHECK_CHAIN_BREAK
DRIFT_CHECK = rc.CHECK_BALANCE_DRIFT
RECONCILIATION = RECONCILIATION_KEY.to_user_string()

# User 1 gets a 500-credit trial and spends 15; the spend's previous_amount should be 500.
# "broken": it says 400 (a 100-credit chain break, and a 100-credit drift against the stored 485);
# "worse": it says 300 (200 credits); "clean": it says 500.
PREVIOUS_AMOUNT = {"broken": 400, "worse": 300, "clean": 500}


class LedgerConfig(dg.Config):
    ledger: str = "broken"


@dg.multi_asset(
    name="ledger_reconciliation",
    specs=[dg.AssetSpec(RECONCILIATION_KEY), dg.AssetSpec(ANOMALIES_KEY)],
    check_specs=reconciliation_check_specs(),
)
def reconciliation_of_a_small_ledger(config: LedgerConfig):
    """The real reconciliation and its real check results, over a two-row ledger."""
    con = duckdb.connect()
    try:
        load_inputs(
            con,
            rows=[
                ledger_row(1, 1, "subscribe_to_trial", 500, 0),
                ledger_row(2, 1, "idea_discovered", 15, PREVIOUS_AMOUNT[config.ledger]),
            ],
            users=[(1, 485, 0)],
        )
        result = reconcile(con, CUTOFF)
    finally:
        con.close()
    yield dg.MaterializeResult(asset_key=RECONCILIATION_KEY)
    yield dg.MaterializeResult(asset_key=ANOMALIES_KEY)
    yield from check_results(result)


@dg.asset(key=["marts", "other_mart"])
def other_mart() -> int:
    return 1


@dg.asset_check(asset=other_mart, name="bare_check")
def bare_failing_check(other_mart: int) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


class JsonReceiver:
    """A real HTTP server on 127.0.0.1 that records every JSON POST as (path, document)."""

    def __init__(self, port: int):
        self.port = port
        self.posts: list[tuple[str, dict]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        return f"http://{LOCALHOST}:{self.port}{path}"

    def bodies(self, path: str) -> list[dict]:
        return [body for posted_path, body in self.posts if posted_path == path]

    def start(self) -> None:
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                posts.append((self.path, json.loads(self.rfile.read(length))))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer((LOCALHOST, self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class MailSink:
    """aiosmtpd handler keeping every accepted message."""

    def __init__(self) -> None:
        self.messages: list = []
        self.port = 0  # set once the controller is listening

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


@pytest.fixture
def receiver() -> Iterator[JsonReceiver]:
    server = JsonReceiver(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mailbox() -> Iterator[MailSink]:
    sink = MailSink()
    controller = Controller(sink, hostname=LOCALHOST, port=free_port())
    controller.start()
    sink.port = controller.port
    yield sink
    controller.stop()


def configure_channels(monkeypatch, http_port: int, smtp_port: int) -> None:
    """Enable all four channels the way production does: through environment variables."""
    monkeypatch.setenv(ch.SLACK_WEBHOOK_URL_VAR, f"http://{LOCALHOST}:{http_port}{SLACK_PATH}")
    monkeypatch.setenv(ch.ALERT_WEBHOOK_URL_VAR, f"http://{LOCALHOST}:{http_port}{WEBHOOK_PATH}")
    monkeypatch.setenv(ch.PAGERDUTY_ROUTING_KEY_VAR, PAGERDUTY_KEY)
    monkeypatch.setenv(
        ch.PAGERDUTY_EVENTS_URL_VAR, f"http://{LOCALHOST}:{http_port}{PAGERDUTY_PATH}"
    )
    monkeypatch.setenv(ch.SMTP_HOST_VAR, LOCALHOST)
    monkeypatch.setenv(ch.SMTP_PORT_VAR, str(smtp_port))
    monkeypatch.setenv(ch.SMTP_STARTTLS_VAR, "false")
    monkeypatch.setenv(ch.ALERT_EMAIL_FROM_VAR, EMAIL_FROM)
    monkeypatch.setenv(ch.ALERT_EMAIL_TO_VAR, EMAIL_TO)
    monkeypatch.setenv(UI_BASE_URL_VAR, UI_BASE)
    for name in (ch.SMTP_USER_VAR, ch.SMTP_PASSWORD_VAR):
        monkeypatch.delenv(name, raising=False)


def no_channels(monkeypatch) -> None:
    for name in (*ch.ALL_CHANNEL_VARS, ch.PAGERDUTY_EVENTS_URL_VAR):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(UI_BASE_URL_VAR, UI_BASE)


DEFINITIONS = dg.Definitions(
    assets=[reconciliation_of_a_small_ledger, other_mart],
    asset_checks=[bare_failing_check],
    sensors=[alert_sensor, run_failure_alert_sensor],
)


RUN_SHARDED = "run_sharded_sqlite"
GLOBAL_IDS = "consolidated_sqlite"


@pytest.fixture(params=[RUN_SHARDED, GLOBAL_IDS])
def instance(request, tmp_path) -> Iterator[dg.DagsterInstance]:
    """Both read paths: the default run-sharded SQLite of `dagster dev`, and a storage with global
    event ids (consolidated SQLite, which reads like PostgreSQL in production)."""
    overrides = None
    if request.param == GLOBAL_IDS:
        overrides = {
            "event_log_storage": {
                "module": "dagster._core.storage.event_log",
                "class": "ConsolidatedSqliteEventLogStorage",
                "config": {"base_dir": str(tmp_path / "event_logs")},
            }
        }
    with dg.instance_for_test(overrides=overrides) as test_instance:
        assert test_instance.event_log_storage.is_run_sharded == (request.param == RUN_SHARDED)
        yield test_instance


def reconcile_ledger(instance: dg.DagsterInstance, ledger: str) -> str:
    """Materialize the reconciliation of the `ledger` variant; return the run id."""
    result = dg.materialize(
        [reconciliation_of_a_small_ledger],
        instance=instance,
        run_config=dg.RunConfig(
            ops={reconciliation_of_a_small_ledger.op.name: LedgerConfig(ledger=ledger)}
        ),
    )
    # The pitfall the sensor exists for: a failed non-blocking check leaves the run successful.
    assert result.success
    return result.run_id


def tick(instance: dg.DagsterInstance, cursor: str | None) -> tuple[str, str, list[str]]:
    """Evaluate the sensor like the daemon does; return (cursor, skip message, log lines), each
    log line "LEVEL: message" as the sensor's log in the UI shows it."""
    with dg.build_sensor_context(
        instance=instance,
        instance_ref=instance.get_ref(),
        cursor=cursor,
        definitions=DEFINITIONS,
        repository_name=REPOSITORY_NAME,
        sensor_name=ALERT_SENSOR_NAME,
    ) as context:
        data = alert_sensor.evaluate_tick(context)
        log_key = context.log_key
    logs = [
        f"{record.get('levelname', '')}: {record.get('msg', '')}"
        for record in get_instigation_log_records(instance, log_key)
    ]
    return data.cursor, data.skip_message or "", logs


def alerts_by_check(payload: dict) -> dict[str, dict]:
    return {alert["check_name"]: alert for alert in payload["alerts"]}


def test_a_failing_ledger_rule_reaches_every_channel_with_counts_credits_worst_users_and_run_link(
    instance, receiver, mailbox, monkeypatch
):
    configure_channels(monkeypatch, receiver.port, mailbox.port)
    run_id = reconcile_ledger(instance, "broken")

    cursor, message, _ = tick(instance, None)

    run_link = f"{UI_BASE}/runs/{run_id}"
    [payload] = receiver.bodies(WEBHOOK_PATH)  # ONE digest for the run, not one per check
    assert payload["run_url"] == run_link
    alerts = alerts_by_check(payload)
    assert set(alerts) == {CHAIN_CHECK, DRIFT_CHECK}
    chain = alerts[CHAIN_CHECK]
    assert chain["asset_key"] == RECONCILIATION
    assert chain["change"] == CHANGE_NEW
    assert chain["severity"] == "ERROR"
    assert chain["rule"] == rc.CHAIN_BREAK
    assert chain["count"] == 1
    assert chain["credits_at_stake"] == 100
    # the worst users with expected (the replay's 500) and actual (the row's 400)
    assert "| 1 | 2 | credit_history | 2 | 500 | 400 | 100 |" in chain["worst_users"]
    assert chain["run_url"] == run_link
    assert chain["runbook_url"] == f"{RUNBOOK_PATH}#{rc.CHAIN_BREAK}"
    assert chain["new_count"] == 1  # its first_detected_at is this run's cut-off
    assert chain["summary"] == (
        "Rule chain_break: 1 violation(s) (1 new since the last run), 100 credits at stake."
    )
    assert payload["new_violations"] == 2
    assert payload["title"].endswith("; 2 violation(s) new since the last run")
    assert alerts[DRIFT_CHECK]["credits_at_stake"] == 100

    [slack] = receiver.bodies(SLACK_PATH)
    slack_text = json.dumps(slack)
    for expected in (CHAIN_CHECK, DRIFT_CHECK, "100 credits at stake", "| 500 | 400 |", run_link):
        assert expected in slack_text
    assert "n/a" not in slack_text
    assert slack["text"] and slack["blocks"][0]["type"] == "header"

    [mail] = mailbox.messages
    assert mail["To"] == EMAIL_TO and mail["From"] == EMAIL_FROM
    assert "2 new" in mail["Subject"]
    body = mail.get_payload(decode=True).decode()
    for expected in (
        f"Rule:             {rc.CHAIN_BREAK}",
        "Severity:         ERROR",
        "Violations:       1",
        "New since last:   1",
        "Credits at stake: 100",
        "| 2 | 500 | 400 |",
        run_link,
        f"{RUNBOOK_PATH}#{rc.CHAIN_BREAK}",
    ):
        assert expected in body
    assert "n/a" not in body

    triggers = receiver.bodies(PAGERDUTY_PATH)
    assert [t["event_action"] for t in triggers] == ["trigger", "trigger"]
    assert {t["routing_key"] for t in triggers} == {PAGERDUTY_KEY}
    chain_event = next(t for t in triggers if t["payload"]["class"] == rc.CHAIN_BREAK)
    assert chain_event["payload"]["severity"] == "error"
    assert chain_event["payload"]["custom_details"]["violations"] == 1
    assert chain_event["payload"]["custom_details"]["credits_at_stake"] == 100
    assert chain_event["payload"]["custom_details"]["new_violations"] == 1
    # the on-call engineer sees who is off without opening Dagster: expected 500, actual 400
    worst_in_pagerduty = chain_event["payload"]["custom_details"]["worst_users"]
    assert "| 1 | 2 | credit_history | 2 | 500 | 400 | 100 |" in worst_in_pagerduty
    assert {"href": run_link, "text": "Open in Dagster"} in chain_event["links"]

    assert "2 alert(s) in 1 digest(s); 4 delivery(ies) made" in message
    assert AlertCursor.from_json(cursor).pending == []


def test_alerts_follow_state_new_then_silent_while_unchanged_then_worse_then_resolved(
    instance, receiver, mailbox, monkeypatch
):
    configure_channels(monkeypatch, receiver.port, mailbox.port)
    cursor = None
    changes_per_run = []
    for ledger in ("broken", "broken", "worse", "clean"):
        reconcile_ledger(instance, ledger)
        before = len(receiver.bodies(WEBHOOK_PATH))
        cursor, _, _ = tick(instance, cursor)
        new_digests = receiver.bodies(WEBHOOK_PATH)[before:]
        assert len(new_digests) <= 1
        changes_per_run.append(
            {a["check_name"]: a["change"] for d in new_digests for a in d["alerts"]}
        )

    assert changes_per_run == [
        {CHAIN_CHECK: CHANGE_NEW, DRIFT_CHECK: CHANGE_NEW},
        {},  # the same problems again: nothing is repeated
        {CHAIN_CHECK: CHANGE_WORSE, DRIFT_CHECK: CHANGE_WORSE},
        {CHAIN_CHECK: CHANGE_RESOLVED, DRIFT_CHECK: CHANGE_RESOLVED},
    ]
    worse = alerts_by_check(receiver.bodies(WEBHOOK_PATH)[1])[CHAIN_CHECK]
    assert (worse["count"], worse["credits_at_stake"]) == (1, 200)
    assert (worse["previous_count"], worse["previous_credits_at_stake"]) == (1, 100)
    assert len(mailbox.messages) == 3 and len(receiver.bodies(SLACK_PATH)) == 3

    # PagerDuty: one incident per rule, triggered, updated, then resolved with the same key
    chain_events = [
        e for e in receiver.bodies(PAGERDUTY_PATH) if e["dedup_key"].endswith(CHAIN_CHECK)
    ]
    assert [e["event_action"] for e in chain_events] == ["trigger", "trigger", "resolve"]
    assert len({e["dedup_key"] for e in chain_events}) == 1
    assert chain_events[0]["dedup_key"] == f"credits_pipeline:{RECONCILIATION}:{CHAIN_CHECK}"
    assert set(chain_events[2]) == {"routing_key", "event_action", "dedup_key"}


def test_a_channel_that_is_down_is_retried_on_the_next_tick_and_its_failure_is_in_the_sensor_log(
    instance, mailbox, monkeypatch
):
    http_port = free_port()  # nobody listens here yet: the webhooks and PagerDuty are down
    configure_channels(monkeypatch, http_port, mailbox.port)
    run_id = reconcile_ledger(instance, "broken")

    cursor, message, logs = tick(instance, None)

    assert len(mailbox.messages) == 1  # email is up and is not held back by the others
    pending = AlertCursor.from_json(cursor).pending
    assert sorted(item.channel for item in pending) == [
        ch.PAGERDUTY_CHANNEL,
        ch.SLACK_CHANNEL,
        ch.WEBHOOK_CHANNEL,
    ]
    assert "channel(s) failing" in message
    failures = [line for line in logs if "failed" in line and "retried on the next tick" in line]
    slack_failure = f"Alert channel {ch.SLACK_CHANNEL} (http://{LOCALHOST}:{http_port})"
    assert any(slack_failure in line for line in failures)
    assert any(ch.WEBHOOK_CHANNEL in line for line in failures)
    assert not any("very-secret-token" in line or PAGERDUTY_KEY in line for line in logs)

    cursor, _, _ = tick(instance, cursor)  # still down: still queued, nothing lost
    assert len(AlertCursor.from_json(cursor).pending) == 3

    receiver = JsonReceiver(http_port)
    receiver.start()
    try:
        cursor, message, _ = tick(instance, cursor)
        cursor, _, _ = tick(instance, cursor)
    finally:
        receiver.stop()

    run_urls = [body["run_url"] for body in receiver.bodies(WEBHOOK_PATH)]
    assert run_urls == [f"{UI_BASE}/runs/{run_id}"]
    assert len(receiver.bodies(SLACK_PATH)) == 1
    assert len(receiver.bodies(PAGERDUTY_PATH)) == 2
    assert len(mailbox.messages) == 1  # the channel that worked was not sent again
    assert AlertCursor.from_json(cursor).pending == []
    assert "3 delivery(ies) made" in message


def test_a_failing_check_without_metadata_still_alerts_with_its_name_as_the_rule(
    instance, receiver, mailbox, monkeypatch
):
    configure_channels(monkeypatch, receiver.port, mailbox.port)
    assert dg.materialize([other_mart, bare_failing_check], instance=instance).success

    tick(instance, None)

    [payload] = receiver.bodies(WEBHOOK_PATH)
    [alert] = payload["alerts"]
    assert alert["check_name"] == alert["rule"] == "bare_check"
    assert alert["count"] is None and alert["credits_at_stake"] is None
    assert "n/a" in mailbox.messages[0].get_payload(decode=True).decode()


def test_an_asset_turning_stale_alerts_and_its_recovery_resolves(
    instance, receiver, mailbox, monkeypatch
):
    configure_channels(monkeypatch, receiver.port, mailbox.port)
    stale_then_fresh = (
        (FreshnessState.PASS, FreshnessState.FAIL),
        (FreshnessState.FAIL, FreshnessState.PASS),
    )
    cursor = None
    for previous, new in stale_then_fresh:
        change = FreshnessStateChange(
            key=RECONCILIATION_KEY,
            previous_state=previous,
            new_state=new,
            state_change_timestamp=time.time(),
        )
        instance.report_runless_asset_event(change)
        cursor, _, _ = tick(instance, cursor)

    stale, fresh = (body["alerts"] for body in receiver.bodies(WEBHOOK_PATH))
    assert [(a["kind"], a["change"], a["severity"]) for a in stale] == [
        ("freshness", CHANGE_NEW, "ERROR")
    ]
    assert stale[0]["asset_key"] == RECONCILIATION and stale[0]["run_url"] is None
    assert stale[0]["asset_url"] == f"{UI_BASE}/assets/{RECONCILIATION}"
    assert [a["change"] for a in fresh] == [CHANGE_RESOLVED]
    assert [e["event_action"] for e in receiver.bodies(PAGERDUTY_PATH)] == ["trigger", "resolve"]


def test_with_no_channel_configured_the_tick_says_loudly_that_alerts_reach_nobody(
    instance, monkeypatch
):
    no_channels(monkeypatch)
    reconcile_ledger(instance, "broken")

    _, message, logs = tick(instance, None)

    assert message.startswith(f"{NO_CHANNEL_WARNING}: 2 alert(s) in 1 digest(s) reached nobody")
    assert ch.PAGERDUTY_ROUTING_KEY_VAR in message
    [warning] = [line for line in logs if NO_CHANNEL_WARNING in line]
    assert warning.startswith("WARNING: ")  # a warning in the tick's log, not an info line


def test_a_run_that_cannot_reach_its_source_alerts_every_channel(
    tmp_path, receiver, mailbox, monkeypatch
):
    configure_channels(monkeypatch, receiver.port, mailbox.port)
    unreachable = f"mysql+pymysql://root@{LOCALHOST}:{free_port()}/syllaby_v2"
    with dg.instance_for_test() as instance:
        result = run_extraction(instance, unreachable, str(tmp_path / "warehouse.duckdb"))
        assert not result.success
        context = run_status_context(
            instance, result, RUN_FAILURE_SENSOR_NAME, dg.DagsterEventType.RUN_FAILURE
        )
        run_failure_alert_sensor(context)

    run_link = f"{UI_BASE}/runs/{result.run_id}"
    [payload] = receiver.bodies(WEBHOOK_PATH)
    [alert] = payload["alerts"]
    assert (alert["kind"], alert["change"], alert["severity"]) == ("run_failure", "failed", "ERROR")
    assert alert["run_url"] == run_link
    assert alert["runbook_url"] == f"{RUNBOOK_PATH}#{RUN_FAILURE_ANCHOR}"  # what to do next
    assert result.dagster_run.job_name in alert["description"]
    assert "cannot connect to the source database" in alert["description"]
    assert alert["description"].count("cannot connect") == 1  # one cause, said once
    assert "more:" in alert["description"]  # ... for the steps that share it
    assert "root@" not in json.dumps(payload)  # the source URL's user stays out
    [event] = receiver.bodies(PAGERDUTY_PATH)
    assert event["event_action"] == "trigger" and event["payload"]["severity"] == "critical"
    assert {
        "href": f"{RUNBOOK_PATH}#{RUN_FAILURE_ANCHOR}",
        "text": "What to do (runbook)",
    } in event["links"]
    assert len(receiver.bodies(SLACK_PATH)) == 1
    [mail] = mailbox.messages
    assert "failed" in mail["Subject"] and run_link in mail.get_payload(decode=True).decode()


def test_a_check_state_changes_only_when_it_starts_failing_gets_worse_or_passes_again():
    failing = CheckState(failing=True, severity="WARN", count=2, credits=50)
    assert state_change(None, failing) == CHANGE_NEW
    assert state_change(CheckState(failing=False), failing) == CHANGE_NEW
    assert state_change(failing, failing) is None
    assert state_change(failing, CheckState(True, "WARN", 1, 40)) is None  # better: no alert
    assert state_change(failing, CheckState(True, "WARN", 3, 50)) == CHANGE_WORSE
    assert state_change(failing, CheckState(True, "WARN", 2, 51)) == CHANGE_WORSE
    assert state_change(failing, CheckState(True, "ERROR", 2, 50)) == CHANGE_WORSE
    assert state_change(failing, CheckState(failing=False)) == CHANGE_RESOLVED
    assert state_change(None, CheckState(failing=False)) is None


def test_the_ledger_checks_and_the_sensor_share_one_set_of_metadata_keys():
    con = duckdb.connect()
    load_inputs(
        con,
        rows=[
            ledger_row(1, 1, "subscribe_to_trial", 500, 0),
            ledger_row(2, 1, "idea_discovered", 15, 400),
        ],
        users=[(1, 485, 0)],
    )
    chain = next(r for r in check_results(reconcile(con, CUTOFF)) if r.check_name == CHAIN_CHECK)
    for key in (cm.RULE, cm.VIOLATIONS, cm.CREDITS_AT_STAKE, cm.WORST_USERS, cm.RUNBOOK):
        assert key in chain.metadata


def test_only_the_channels_whose_variables_are_set_are_enabled():
    assert channels_from_env({}) == []
    only_webhook = channels_from_env({ch.ALERT_WEBHOOK_URL_VAR: "https://hooks.test/x?t=s3cret"})
    assert [channel.name for channel in only_webhook] == [ch.WEBHOOK_CHANNEL]
    assert only_webhook[0].target == "https://hooks.test"
    # SMTP needs both a host and a recipient; a user turns STARTTLS on by default.
    assert channels_from_env({ch.SMTP_HOST_VAR: "smtp.test"}) == []
    [email] = channels_from_env(
        {
            ch.SMTP_HOST_VAR: "smtp.test",
            ch.ALERT_EMAIL_TO_VAR: "a@x.test; b@x.test",
            ch.SMTP_USER_VAR: "u",
        }
    )
    assert (email.port, email.starttls, email.recipients) == (587, True, ["a@x.test", "b@x.test"])
    assert "u" not in email.target and email.target == "smtp://smtp.test:587"
    # PagerDuty: the routing key switches it on; the endpoint defaults to the public Events API v2
    [pagerduty] = channels_from_env({ch.PAGERDUTY_ROUTING_KEY_VAR: PAGERDUTY_KEY})
    assert pagerduty.name == ch.PAGERDUTY_CHANNEL
    assert pagerduty.target == "https://events.pagerduty.com"
    assert PAGERDUTY_KEY not in repr(pagerduty)


def test_the_sensors_are_on_by_default_and_tick_at_most_once_a_minute():
    for sensor, name in (
        (alert_sensor, ALERT_SENSOR_NAME),
        (run_failure_alert_sensor, RUN_FAILURE_SENSOR_NAME),
    ):
        assert sensor.name == name
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        assert sensor.minimum_interval_seconds == 60
    dg.Definitions.validate_loadable(DEFINITIONS)
