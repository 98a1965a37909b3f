"""What an alert says, independent of how it travels.

The sensor turns a failed check evaluation or a freshness state change into one `Alert`; every
channel renders that same record (Slack blocks, an email, a JSON document), so the three channels
never disagree about the rule, the counts or the credits at stake. Everything here is pure: no I/O,
no Dagster imports, so the wording can be tested and changed without a running instance. An `Alert`
also round-trips through plain JSON (`to_dict`/`from_dict`) because undelivered alerts wait in the
sensor's cursor until their channel comes back.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

PIPELINE_NAME = "credits_pipeline"

# Alert kinds: a failed asset check, or an asset whose freshness state turned WARN/FAIL.
KIND_CHECK = "asset_check"
KIND_FRESHNESS = "freshness"

SEVERITY_ERROR = "ERROR"
SEVERITY_WARN = "WARN"

# Slack rejects a section text over 3,000 characters and a header over 150.
SLACK_SECTION_LIMIT = 3000
SLACK_HEADER_LIMIT = 150
# Keep the email subject readable in a mail client's list view.
EMAIL_SUBJECT_LIMIT = 200
TRUNCATION_MARK = "\n…(truncated)"

NOT_REPORTED = "n/a"


@dataclasses.dataclass(frozen=True)
class Alert:
    """One failed check (or stale asset), with everything a human needs to act on it.

    `alert_id` is stable for the underlying event (`{run_id}:{asset_key}:{check_name}` for checks,
    the event's storage id for freshness changes) so that deliveries can be deduplicated on it.
    Numbers are optional because another team's checks decide which metadata they attach.
    """

    alert_id: str
    kind: str
    asset_key: str
    check_name: str
    severity: str
    rule: str
    count: int | None
    credits_at_stake: float | int | None
    worst_users: str | None
    description: str | None
    run_id: str | None
    run_url: str | None
    asset_url: str
    timestamp: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Alert:
        """Rebuild an alert stored in the sensor cursor, ignoring keys a newer version added."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in raw.items() if key in names})


def format_number(value: float | int | None) -> str:
    """Counts and credits for humans: thousands separators, no `.0` on whole numbers."""
    if value is None:
        return NOT_REPORTED
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def truncate(text: str, limit: int) -> str:
    """Cut text to a channel's size limit, saying so, instead of having the channel reject it."""
    if len(text) <= limit:
        return text
    return text[: max(limit - len(TRUNCATION_MARK), 0)] + TRUNCATION_MARK


def headline(alert: Alert) -> str:
    """One line naming what failed where; shared by the Slack header, the email subject and logs."""
    if alert.kind == KIND_FRESHNESS:
        return f"[{alert.severity}] {alert.asset_key} is stale ({alert.rule})"
    return f"[{alert.severity}] check {alert.check_name} failed on {alert.asset_key}"


def summary_line(alert: Alert) -> str:
    """Rule, violation count and credits at stake in one sentence."""
    return (
        f"Rule {alert.rule}: {format_number(alert.count)} violation(s), "
        f"{format_number(alert.credits_at_stake)} credits at stake."
    )


def link_target(alert: Alert) -> str:
    """The run that produced the evaluation; runless events (freshness) link to the asset."""
    return alert.run_url or alert.asset_url


def slack_payload(alert: Alert) -> dict[str, Any]:
    """Incoming-webhook body: `text` for notifications and old clients, `blocks` for the layout.

    Slack does not render Markdown tables, so the worst users go in a preformatted block.
    """
    fields = [
        ("Asset", f"`{alert.asset_key}`"),
        ("Check", f"`{alert.check_name}`"),
        ("Rule", f"`{alert.rule}`"),
        ("Severity", alert.severity),
        ("Violations", format_number(alert.count)),
        ("Credits at stake", format_number(alert.credits_at_stake)),
    ]
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": truncate(headline(alert), SLACK_HEADER_LIMIT)},
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{label}*\n{value}"} for label, value in fields
            ],
        },
    ]
    if alert.description:
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": truncate(alert.description, SLACK_SECTION_LIMIT),
                },
            }
        )
    if alert.worst_users:
        fence = "```"
        body = truncate(alert.worst_users, SLACK_SECTION_LIMIT - 40)
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*Worst users*\n{fence}{body}{fence}"},
            }
        )
    link_label = "Open the run in Dagster" if alert.run_url else "Open the asset in Dagster"
    blocks.append(
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"<{link_target(alert)}|{link_label}>"},
        }
    )
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"{alert.timestamp} · alert `{alert.alert_id}`"}
            ],
        }
    )
    text = f"{headline(alert)} — {summary_line(alert)} {link_target(alert)}"
    return {"text": text, "blocks": blocks}


def email_subject(alert: Alert) -> str:
    subject = f"[{PIPELINE_NAME}] {headline(alert)}: {format_number(alert.count)} violation(s)"
    return truncate(subject, EMAIL_SUBJECT_LIMIT)


def email_body(alert: Alert) -> str:
    """Plain text on purpose: the worst-users Markdown table stays aligned in any mail client."""
    lines = [
        headline(alert),
        "",
        summary_line(alert),
        "",
        f"Asset:            {alert.asset_key}",
        f"Check:            {alert.check_name}",
        f"Rule:             {alert.rule}",
        f"Severity:         {alert.severity}",
        f"Violations:       {format_number(alert.count)}",
        f"Credits at stake: {format_number(alert.credits_at_stake)}",
        f"Run:              {alert.run_id or 'none (runless event)'}",
        f"Detected at:      {alert.timestamp}",
        "",
    ]
    if alert.description:
        lines += [alert.description, ""]
    if alert.worst_users:
        lines += ["Worst users:", "", alert.worst_users, ""]
    lines += [f"Open in Dagster: {link_target(alert)}", "", f"Alert id: {alert.alert_id}"]
    return "\n".join(lines)


def json_payload(alert: Alert) -> dict[str, Any]:
    """The generic webhook document: every field, machine-readable, plus a `summary` sentence."""
    return {
        "source": PIPELINE_NAME,
        "title": headline(alert),
        "summary": summary_line(alert),
        **alert.to_dict(),
    }
