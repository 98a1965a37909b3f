"""Where alerts go: Slack, email over SMTP, a generic JSON webhook and PagerDuty (Events API v2).

Each channel is switched on by its own environment variables (`channels_from_env`), so a laptop with
none set sends nothing and production enables exactly what it configures. Senders are small
classes with one `send(digest)` (a run's alerts, `messages.Digest`) that either returns or raises
`DeliveryError`; the sensor decides
what to retry. Webhook URLs carry their secret in the path (Slack's `/services/T…/B…/…`) and SMTP
has a password, so nothing here ever puts a URL, a path, a user or a password into an error or a
log line: only the channel's name and a redacted host (`target`). Exceptions from `requests` embed
the full URL in their text, which is why `DeliveryError` carries a description built from the
exception's type and status code, never `str(exc)`.
"""

from __future__ import annotations

import os
import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any, Protocol

import requests

from credits_pipeline.alerts.messages import (
    Digest,
    email_body,
    email_subject,
    json_payload,
    pagerduty_events,
    slack_payload,
)
from credits_pipeline.settings import (  # checked at start-up with the rest of the environment
    SMTP_PLAIN_PORT,
    SMTP_PORT_VAR,
    SMTP_STARTTLS_VAR,
    parse_smtp_port,
    parse_starttls,
)

# Environment variables, one group per channel.
SLACK_WEBHOOK_URL_VAR = "CREDITS_SLACK_WEBHOOK_URL"
SMTP_HOST_VAR = "CREDITS_SMTP_HOST"  # SMTP_PORT_VAR and SMTP_STARTTLS_VAR: settings.py
SMTP_USER_VAR = "CREDITS_SMTP_USER"
SMTP_PASSWORD_VAR = "CREDITS_SMTP_PASSWORD"
ALERT_EMAIL_FROM_VAR = "CREDITS_ALERT_EMAIL_FROM"
ALERT_EMAIL_TO_VAR = "CREDITS_ALERT_EMAIL_TO"
ALERT_WEBHOOK_URL_VAR = "CREDITS_ALERT_WEBHOOK_URL"
# PagerDuty: the integration's routing key (a secret) switches it on; the endpoint defaults to the
# public Events API v2 and is configurable (a regional endpoint, a proxy, or a test receiver).
PAGERDUTY_ROUTING_KEY_VAR = "CREDITS_PAGERDUTY_ROUTING_KEY"
PAGERDUTY_EVENTS_URL_VAR = "CREDITS_PAGERDUTY_EVENTS_URL"
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
ALL_CHANNEL_VARS = (
    SLACK_WEBHOOK_URL_VAR,
    SMTP_HOST_VAR,
    ALERT_EMAIL_TO_VAR,
    ALERT_WEBHOOK_URL_VAR,
    PAGERDUTY_ROUTING_KEY_VAR,
)

# Channel names: used in logs and as the delivery key in the sensor's retry queue.
SLACK_CHANNEL = "slack"
EMAIL_CHANNEL = "email"
WEBHOOK_CHANNEL = "webhook"
PAGERDUTY_CHANNEL = "pagerduty"

# (connect, read) seconds: a hung receiver must not eat the sensor tick's time budget.
HTTP_TIMEOUT_SECONDS = (5.0, 10.0)
SMTP_TIMEOUT_SECONDS = 10.0
SMTP_SUBMISSION_PORT = 587
SMTPS_PORT = 465  # implicit TLS
DEFAULT_EMAIL_FROM = "credits-pipeline@localhost"
USER_AGENT = "credits-pipeline-alerts/1"


class DeliveryError(Exception):
    """A channel could not deliver; the message is safe to log (no URL, path or credential)."""


class AlertChannel(Protocol):
    """What the sensor needs from a channel: a stable name, a loggable target, and `send`."""

    name: str

    @property
    def target(self) -> str: ...

    def send(self, digest: Digest) -> None: ...


def redact_http_url(url: str) -> str:
    """`scheme://host[:port]` only: webhook secrets live in the path and query."""
    from credits_pipeline.redaction import redact_url  # one redaction for every URL

    return redact_url(url)


def describe_http_failure(exc: Exception) -> str:
    """A loggable reason for a failed POST: the exception type and HTTP status, never its text."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return f"{type(exc).__name__}" + (f" (HTTP {status})" if status is not None else "")


def describe_smtp_failure(exc: Exception) -> str:
    """A loggable reason for a failed SMTP exchange: the exception type and SMTP reply code."""
    code = getattr(exc, "smtp_code", None)
    return f"{type(exc).__name__}" + (f" (SMTP {code})" if code is not None else "")


def post_json(url: str, payload: Mapping[str, Any]) -> None:
    """POST a JSON document and treat anything but a 2xx answer as a failed delivery."""
    try:
        response = requests.post(
            url, json=payload, timeout=HTTP_TIMEOUT_SECONDS, headers={"User-Agent": USER_AGENT}
        )
        response.raise_for_status()
    except requests.RequestException as exc:
        raise DeliveryError(describe_http_failure(exc)) from None


class SlackWebhookChannel:
    """Posts Block Kit messages to a Slack incoming webhook (`CREDITS_SLACK_WEBHOOK_URL`)."""

    name = SLACK_CHANNEL

    def __init__(self, webhook_url: str):
        self._url = webhook_url

    @property
    def target(self) -> str:
        return redact_http_url(self._url)

    def send(self, digest: Digest) -> None:
        post_json(self._url, slack_payload(digest))

    def __repr__(self) -> str:
        return f"SlackWebhookChannel({self.target})"


class JsonWebhookChannel:
    """Posts the alert as a flat JSON document to an HTTP endpoint (`CREDITS_ALERT_WEBHOOK_URL`)."""

    name = WEBHOOK_CHANNEL

    def __init__(self, url: str):
        self._url = url

    @property
    def target(self) -> str:
        return redact_http_url(self._url)

    def send(self, digest: Digest) -> None:
        post_json(self._url, json_payload(digest))

    def __repr__(self) -> str:
        return f"JsonWebhookChannel({self.target})"


class PagerDutyChannel:
    """Sends Events API v2 events: a `trigger` per new or worse problem, a `resolve` per fix.

    The dedup key is the problem's (`messages.pagerduty_dedup_key`), stable across runs, so one
    incident is opened per failing rule and closed by the run in which it passes again. The routing
    key is a secret: it is sent in the body only, never logged (`target` is the endpoint's host).
    """

    name = PAGERDUTY_CHANNEL

    def __init__(self, routing_key: str, events_url: str = PAGERDUTY_EVENTS_URL):
        self._routing_key = routing_key
        self._url = events_url

    @property
    def target(self) -> str:
        return redact_http_url(self._url)

    def send(self, digest: Digest) -> None:
        for event in pagerduty_events(digest, self._routing_key):
            post_json(self._url, event)

    def __repr__(self) -> str:
        return f"PagerDutyChannel({self.target})"


class EmailChannel:
    """Sends one plain-text email per alert over SMTP (STARTTLS, implicit TLS on 465, or plain).

    Login happens only when a user is configured; STARTTLS defaults to on when there is a user, so
    a password is never sent in clear unless `CREDITS_SMTP_STARTTLS=false` says so explicitly.
    """

    name = EMAIL_CHANNEL

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: list[str],
        user: str | None = None,
        password: str | None = None,
        starttls: bool = False,
    ):
        self.host = host
        self.port = port
        self.sender = sender
        self.recipients = recipients
        self._user = user
        self._password = password
        self.starttls = starttls

    @property
    def target(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def build_message(self, digest: Digest) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = email_subject(digest)
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message["X-Credits-Alert-Id"] = digest.digest_id
        message.set_content(email_body(digest))
        return message

    def send(self, digest: Digest) -> None:
        message = self.build_message(digest)
        try:
            if self.port == SMTPS_PORT:
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host,
                    self.port,
                    timeout=SMTP_TIMEOUT_SECONDS,
                    context=ssl.create_default_context(),
                )
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=SMTP_TIMEOUT_SECONDS)
            with client:
                if self.starttls and self.port != SMTPS_PORT:
                    client.starttls(context=ssl.create_default_context())
                if self._user:
                    client.login(self._user, self._password or "")
                client.send_message(message, from_addr=self.sender, to_addrs=self.recipients)
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(describe_smtp_failure(exc)) from None

    def __repr__(self) -> str:
        return f"EmailChannel({self.target})"


def parse_recipients(raw: str | None) -> list[str]:
    """`CREDITS_ALERT_EMAIL_TO` holds one or more addresses separated by commas or semicolons."""
    return [part.strip() for part in (raw or "").replace(";", ",").split(",") if part.strip()]


def email_channel_from_env(env: Mapping[str, str]) -> EmailChannel | None:
    """Enabled when both `CREDITS_SMTP_HOST` and `CREDITS_ALERT_EMAIL_TO` are set."""
    host = (env.get(SMTP_HOST_VAR) or "").strip()
    recipients = parse_recipients(env.get(ALERT_EMAIL_TO_VAR))
    if not host or not recipients:
        return None
    user = env.get(SMTP_USER_VAR) or None
    starttls = parse_starttls(env.get(SMTP_STARTTLS_VAR), default=bool(user))
    default_port = SMTP_SUBMISSION_PORT if (starttls or user) else SMTP_PLAIN_PORT
    port = parse_smtp_port(env.get(SMTP_PORT_VAR), default_port)
    return EmailChannel(
        host=host,
        port=port,
        sender=(env.get(ALERT_EMAIL_FROM_VAR) or DEFAULT_EMAIL_FROM).strip(),
        recipients=recipients,
        user=user,
        password=env.get(SMTP_PASSWORD_VAR) or None,
        starttls=starttls,
    )


def channels_from_env(env: Mapping[str, str] | None = None) -> list[AlertChannel]:
    """The channels whose environment variables are set, in a fixed order (Slack, email, webhook,
    PagerDuty).

    Read on every sensor tick, so the channels always match the code location's environment.
    """
    env = os.environ if env is None else env
    channels: list[AlertChannel] = []
    slack_url = (env.get(SLACK_WEBHOOK_URL_VAR) or "").strip()
    if slack_url:
        channels.append(SlackWebhookChannel(slack_url))
    email = email_channel_from_env(env)
    if email is not None:
        channels.append(email)
    webhook_url = (env.get(ALERT_WEBHOOK_URL_VAR) or "").strip()
    if webhook_url:
        channels.append(JsonWebhookChannel(webhook_url))
    routing_key = (env.get(PAGERDUTY_ROUTING_KEY_VAR) or "").strip()
    if routing_key:
        events_url = (env.get(PAGERDUTY_EVENTS_URL_VAR) or "").strip() or PAGERDUTY_EVENTS_URL
        channels.append(PagerDutyChannel(routing_key, events_url))
    return channels
