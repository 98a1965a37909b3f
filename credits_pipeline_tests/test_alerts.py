"""The alert sensor, end to end, against a real Dagster instance, SMTP server and HTTP receiver.

Failed non-blocking checks leave the run green, so the only proof that alerting works is to run a
real materialization into a real instance, evaluate the sensor on that instance's event log and see
what really arrives at a real SMTP server (aiosmtpd) and a real HTTP endpoint (Slack and JSON
webhook share one local receiver). Nothing is patched or mocked: channels are configured through
their environment variables, and "a channel is down" means a port nobody listens on.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest
from aiosmtpd.controller import Controller
from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange
from dagster._core.definitions.instigation_logger import get_instigation_log_records

from credits_pipeline.alerts import ALERT_SENSOR_NAME, alert_sensor, channels_from_env
from credits_pipeline.alerts import channels as ch
from credits_pipeline.alerts.sensor import AlertCursor
from credits_pipeline.settings import UI_BASE_URL_VAR

LOCALHOST = "127.0.0.1"
UI_BASE = "http://dagster.test:3000"
SLACK_PATH = "/services/T000/B000/very-secret-token"
WEBHOOK_PATH = "/hooks/credits-alerts"
EMAIL_FROM = "credits@pipeline.test"
EMAIL_TO = "oncall@pipeline.test"
REPOSITORY_NAME = "__repository__"

FAILING_CHECK = "no_chain_breaks"
PASSING_CHECK = "no_orphan_users"
RULE = "chain_break"
COUNT = 3
CREDITS = 1250.5
WORST = "| user_id | credits |\n|---|---|\n| 42 | 1000 |\n| 7 | 250.5 |"


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
    """Enable all three channels the way production does: through environment variables."""
    monkeypatch.setenv(ch.SLACK_WEBHOOK_URL_VAR, f"http://{LOCALHOST}:{http_port}{SLACK_PATH}")
    monkeypatch.setenv(ch.ALERT_WEBHOOK_URL_VAR, f"http://{LOCALHOST}:{http_port}{WEBHOOK_PATH}")
    monkeypatch.setenv(ch.SMTP_HOST_VAR, LOCALHOST)
    monkeypatch.setenv(ch.SMTP_PORT_VAR, str(smtp_port))
    monkeypatch.setenv(ch.SMTP_STARTTLS_VAR, "false")
    monkeypatch.setenv(ch.ALERT_EMAIL_FROM_VAR, EMAIL_FROM)
    monkeypatch.setenv(ch.ALERT_EMAIL_TO_VAR, EMAIL_TO)
    monkeypatch.setenv(UI_BASE_URL_VAR, UI_BASE)
    for name in (ch.SMTP_USER_VAR, ch.SMTP_PASSWORD_VAR):
        monkeypatch.delenv(name, raising=False)


@dg.asset(key=["marts", "ledger_anomalies"])
def ledger_anomalies() -> int:
    return COUNT


@dg.asset_check(asset=ledger_anomalies, name=FAILING_CHECK, blocking=False)
def failing_check(ledger_anomalies: int) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        description="Rows whose previous_amount differs from the replay.",
        metadata={
            "count": COUNT,
            "credits": CREDITS,
            "worst": dg.MetadataValue.md(WORST),
            "rule": RULE,
        },
    )


@dg.asset_check(asset=ledger_anomalies, name=PASSING_CHECK)
def passing_check(ledger_anomalies: int) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True, metadata={"count": 0, "rule": "orphan_user"})


@dg.asset_check(asset=ledger_anomalies, name="bare_check")
def bare_failing_check(ledger_anomalies: int) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False)


DEFINITIONS = dg.Definitions(
    assets=[ledger_anomalies],
    asset_checks=[failing_check, passing_check, bare_failing_check],
    sensors=[alert_sensor],
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


def materialize(instance: dg.DagsterInstance, *checks) -> str:
    result = dg.materialize([ledger_anomalies, *checks], instance=instance)
    # The pitfall the sensor exists for: a failed non-blocking check leaves the run successful.
    assert result.success
    return result.run_id


def tick(instance: dg.DagsterInstance, cursor: str | None) -> tuple[str, str, list[str]]:
    """Evaluate the sensor like the daemon does; return (cursor, skip message, log messages)."""
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
    logs = [record.get("msg", "") for record in get_instigation_log_records(instance, log_key)]
    return data.cursor, data.skip_message or "", logs


def test_a_failed_check_reaches_every_channel_with_rule_counts_credits_worst_users_and_run_link(
    instance, receiver, mailbox, monkeypatch
):
    configure_channels(monkeypatch, receiver.port, mailbox.port)
    run_id = materialize(instance, failing_check, passing_check)

    cursor, message, _ = tick(instance, None)

    run_link = f"{UI_BASE}/runs/{run_id}"
    [payload] = receiver.bodies(WEBHOOK_PATH)
    assert payload["alert_id"] == f"{run_id}:marts/ledger_anomalies:{FAILING_CHECK}"
    assert payload["asset_key"] == "marts/ledger_anomalies"
    assert payload["check_name"] == FAILING_CHECK
    assert payload["severity"] == "ERROR"
    assert payload["rule"] == RULE
    assert payload["count"] == COUNT
    assert payload["credits_at_stake"] == CREDITS
    assert payload["worst_users"] == WORST
    assert payload["run_url"] == run_link

    [slack] = receiver.bodies(SLACK_PATH)
    slack_text = json.dumps(slack)
    for expected in (FAILING_CHECK, RULE, "1,250.50", "| 42 | 1000 |", run_link):
        assert expected in slack_text
    assert slack["text"] and slack["blocks"][0]["type"] == "header"

    [mail] = mailbox.messages
    assert mail["To"] == EMAIL_TO and mail["From"] == EMAIL_FROM
    assert FAILING_CHECK in mail["Subject"]
    body = mail.get_payload(decode=True).decode()
    for expected in (RULE, f"Violations:       {COUNT}", "1,250.50", "| 7 | 250.5 |", run_link):
        assert expected in body

    assert "1 new alert(s); 3 delivery(ies) made" in message
    assert AlertCursor.from_json(cursor).pending == []


def test_nothing_is_sent_when_every_check_passes(instance, receiver, mailbox, monkeypatch):
    configure_channels(monkeypatch, receiver.port, mailbox.port)
    materialize(instance, passing_check)

    cursor, message, _ = tick(instance, None)

    assert receiver.posts == [] and mailbox.messages == []
    assert message.startswith("0 new alert(s)")
    assert AlertCursor.from_json(cursor).positions  # the event-log position still moved


def test_the_next_tick_does_not_repeat_an_alert_but_a_new_run_alerts_again(
    instance, receiver, mailbox, monkeypatch
):
    configure_channels(monkeypatch, receiver.port, mailbox.port)
    first_run = materialize(instance, failing_check, passing_check)
    cursor, _, _ = tick(instance, None)
    cursor, message, _ = tick(instance, cursor)

    assert len(receiver.bodies(WEBHOOK_PATH)) == 1 and len(mailbox.messages) == 1
    assert message.startswith("0 new alert(s)")

    second_run = materialize(instance, failing_check, passing_check)
    tick(instance, cursor)

    alert_ids = [body["alert_id"] for body in receiver.bodies(WEBHOOK_PATH)]
    assert [alert_id.split(":")[0] for alert_id in alert_ids] == [first_run, second_run]
    assert len(receiver.bodies(SLACK_PATH)) == 2 and len(mailbox.messages) == 2


def test_a_channel_that_is_down_is_retried_on_the_next_tick_and_its_failure_is_in_the_sensor_log(
    instance, mailbox, monkeypatch
):
    http_port = free_port()  # nobody listens here yet: both webhooks are down
    configure_channels(monkeypatch, http_port, mailbox.port)
    run_id = materialize(instance, failing_check, passing_check)

    cursor, message, logs = tick(instance, None)

    assert len(mailbox.messages) == 1  # email is up and is not held back by the others
    pending = AlertCursor.from_json(cursor).pending
    assert sorted(item.channel for item in pending) == [ch.SLACK_CHANNEL, ch.WEBHOOK_CHANNEL]
    assert "channel(s) failing" in message
    failures = [line for line in logs if "failed" in line and "retried on the next tick" in line]
    slack_failure = f"Alert channel {ch.SLACK_CHANNEL} (http://{LOCALHOST}:{http_port})"
    assert any(slack_failure in line for line in failures)
    assert any(ch.WEBHOOK_CHANNEL in line for line in failures)
    assert not any("very-secret-token" in line for line in logs)  # the webhook secret stays out

    cursor, _, _ = tick(instance, cursor)  # still down: still queued, nothing lost
    assert len(AlertCursor.from_json(cursor).pending) == 2

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
    assert len(mailbox.messages) == 1  # the channel that worked was not sent again
    assert AlertCursor.from_json(cursor).pending == []
    assert "2 delivery(ies) made" in message


def test_a_failing_check_without_metadata_still_alerts_with_its_name_as_the_rule(
    instance, receiver, mailbox, monkeypatch
):
    configure_channels(monkeypatch, receiver.port, mailbox.port)
    materialize(instance, bare_failing_check, passing_check)

    tick(instance, None)

    [payload] = receiver.bodies(WEBHOOK_PATH)
    assert payload["check_name"] == payload["rule"] == "bare_check"
    assert payload["count"] is None and payload["credits_at_stake"] is None
    assert "n/a" in mailbox.messages[0].get_payload(decode=True).decode()


def test_an_asset_turning_stale_alerts_once_and_a_recovery_does_not(
    instance, receiver, mailbox, monkeypatch
):
    configure_channels(monkeypatch, receiver.port, mailbox.port)
    key = dg.AssetKey(["marts", "user_balance_reconciliation"])
    stale_then_fresh = (
        (FreshnessState.PASS, FreshnessState.FAIL),
        (FreshnessState.FAIL, FreshnessState.PASS),
    )
    for previous, new in stale_then_fresh:
        change = FreshnessStateChange(
            key=key, previous_state=previous, new_state=new, state_change_timestamp=time.time()
        )
        instance.report_runless_asset_event(change)

    cursor, _, _ = tick(instance, None)
    tick(instance, cursor)

    [payload] = receiver.bodies(WEBHOOK_PATH)
    assert payload["kind"] == "freshness" and payload["severity"] == "ERROR"
    assert payload["asset_key"] == "marts/user_balance_reconciliation"
    assert payload["run_url"] is None
    assert payload["asset_url"] == f"{UI_BASE}/assets/marts/user_balance_reconciliation"


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


def test_the_sensor_is_on_by_default_and_ticks_at_most_once_a_minute():
    assert alert_sensor.name == ALERT_SENSOR_NAME
    assert alert_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert alert_sensor.minimum_interval_seconds == 60
    dg.Definitions.validate_loadable(DEFINITIONS)

