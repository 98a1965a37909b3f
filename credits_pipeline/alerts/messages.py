"""What an alert says, independent of how it travels.

The sensor turns check evaluations, freshness changes and failed runs into `Alert`s — one per
*change of state* of a check (it started failing, got worse, or passes again), never one per run
of an unchanged problem — and gathers a run's alerts into one `Digest`. Every channel renders that
same digest (Slack blocks, an email, a JSON document, PagerDuty events), so the channels never
disagree about the rule, the counts or the credits at stake. Everything here is pure: no I/O, no
Dagster imports, so the wording can be tested and changed without a running instance. Alerts and
digests round-trip through plain JSON (`to_dict`/`from_dict`) because undelivered digests wait in
the sensor's cursor until their channel comes back.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

PIPELINE_NAME = "credits_pipeline"

# Alert kinds: a check evaluation, an asset's freshness state, or a failed run.
KIND_CHECK = "asset_check"
KIND_FRESHNESS = "freshness"
KIND_RUN_FAILURE = "run_failure"

# What changed: the states an alert is about.
CHANGE_NEW = "new"  # started failing (or a freshness state turned WARN/FAIL)
CHANGE_WORSE = "worse"  # still failing, with more violations or more credits at stake
CHANGE_RESOLVED = "resolved"  # passes again (or fresh again)
CHANGE_FAILED = "failed"  # a run failed
TRIGGERING_CHANGES = (CHANGE_NEW, CHANGE_WORSE, CHANGE_FAILED)
CHANGE_LABELS = {
    CHANGE_NEW: "NEW",
    CHANGE_WORSE: "WORSE",
    CHANGE_RESOLVED: "RESOLVED",
    CHANGE_FAILED: "RUN FAILED",
}

SEVERITY_ERROR = "ERROR"
SEVERITY_WARN = "WARN"

# Slack rejects a section text over 3,000 characters, a header over 150, and more than 50 blocks.
SLACK_SECTION_LIMIT = 3000
SLACK_HEADER_LIMIT = 150
SLACK_MAX_ALERT_BLOCKS = 40
# Keep the email subject readable in a mail client's list view.
EMAIL_SUBJECT_LIMIT = 200
# PagerDuty rejects a summary over 1,024 characters.
PAGERDUTY_SUMMARY_LIMIT = 1024
PAGERDUTY_SEVERITY = {SEVERITY_ERROR: "error", SEVERITY_WARN: "warning"}
PAGERDUTY_RUN_FAILURE_SEVERITY = "critical"
TRUNCATION_MARK = "\n…(truncated)"

NOT_REPORTED = "n/a"


@dataclasses.dataclass(frozen=True)
class Alert:
    """One change of state of one check (or asset, or run), with what a human needs to act on it.

    `alert_id` is stable for the underlying event; `state_key` is stable for the *problem* across
    runs (`{asset_key}:{check_name}`, plus the partition) and is what PagerDuty deduplicates on, so
    a trigger and its later resolve meet in one incident. Numbers are optional because another
    team's checks decide which metadata they attach.
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
    change: str = CHANGE_NEW
    state_key: str = ""
    previous_count: int | None = None
    previous_credits_at_stake: float | int | None = None
    runbook_url: str | None = None
    new_count: int | None = None  # violations first reported at this run's cut-off

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Alert:
        """Rebuild an alert stored in the sensor cursor, ignoring keys a newer version added."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in raw.items() if key in names})


@dataclasses.dataclass(frozen=True)
class Digest:
    """Everything one run (or one sensor tick, for runless events) changed: one message per run.

    `still_failing` names the checks that keep failing unchanged: they are not alerted again, but
    the digest says they are still there so nobody mistakes silence for a fix.
    """

    digest_id: str
    run_id: str | None
    run_url: str | None
    alerts: tuple[Alert, ...]
    still_failing: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "digest_id": self.digest_id,
            "run_id": self.run_id,
            "run_url": self.run_url,
            "alerts": [alert.to_dict() for alert in self.alerts],
            "still_failing": list(self.still_failing),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Digest:
        return cls(
            digest_id=str(raw["digest_id"]),
            run_id=raw.get("run_id"),
            run_url=raw.get("run_url"),
            alerts=tuple(Alert.from_dict(dict(a)) for a in raw.get("alerts", [])),
            still_failing=tuple(raw.get("still_failing", [])),
        )

    def count(self, *changes: str) -> int:
        return sum(1 for alert in self.alerts if alert.change in changes)


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
    """One line naming what changed where; shared by every channel and by logs."""
    label = CHANGE_LABELS.get(alert.change, alert.change.upper())
    if alert.kind == KIND_RUN_FAILURE:
        return f"[{label}] run of {alert.check_name} failed"
    if alert.kind == KIND_FRESHNESS:
        if alert.change == CHANGE_RESOLVED:
            return f"[{label}] {alert.asset_key} is fresh again"
        return f"[{label}] [{alert.severity}] {alert.asset_key} is stale ({alert.rule})"
    if alert.change == CHANGE_RESOLVED:
        return f"[{label}] check {alert.check_name} passes again on {alert.asset_key}"
    return f"[{label}] [{alert.severity}] check {alert.check_name} failed on {alert.asset_key}"


def summary_line(alert: Alert) -> str:
    """Rule, violation count and credits at stake in one sentence (with the change, if worse)."""
    if alert.kind == KIND_RUN_FAILURE:
        return alert.description or "The run failed."
    new = (
        f" ({format_number(alert.new_count)} new since the last run)"
        if alert.new_count is not None and alert.change != CHANGE_RESOLVED
        else ""
    )
    text = (
        f"Rule {alert.rule}: {format_number(alert.count)} violation(s){new}, "
        f"{format_number(alert.credits_at_stake)} credits at stake"
    )
    if alert.change in (CHANGE_WORSE, CHANGE_RESOLVED) and (
        alert.previous_count is not None or alert.previous_credits_at_stake is not None
    ):
        text += (
            f" (was {format_number(alert.previous_count)} violation(s), "
            f"{format_number(alert.previous_credits_at_stake)} credits)"
        )
    return text + "."


def link_target(alert: Alert) -> str:
    """The run that produced the evaluation; runless events (freshness) link to the asset."""
    return alert.run_url or alert.asset_url


def digest_title(digest: Digest) -> str:
    """One line for the whole digest: what changed, counted by kind of change."""
    parts = []
    for change in (CHANGE_FAILED, CHANGE_NEW, CHANGE_WORSE, CHANGE_RESOLVED):
        n = digest.count(change)
        if n:
            parts.append(f"{n} {CHANGE_LABELS[change].lower()}")
    where = f"run {digest.run_id[:8]}" if digest.run_id else "runless events"
    if len(digest.alerts) == 1:
        return headline(digest.alerts[0])
    title = f"{PIPELINE_NAME}: {', '.join(parts)} ({where})"
    new = new_violations(digest)
    return (
        title
        if new is None
        else f"{title}; {format_number(new)} violation(s) new since the last run"
    )


def new_violations(digest: Digest) -> int | None:
    """Violations of the digest's failing checks first reported at this run's cut-off (None when
    no check says: only the ledger rules know their violations' `first_detected_at`)."""
    counts = [
        a.new_count
        for a in digest.alerts
        if a.new_count is not None and a.change != CHANGE_RESOLVED
    ]
    return sum(counts) if counts else None


def alert_lines(alert: Alert) -> list[str]:
    """An alert as plain text lines, the same in the email and the Slack fallback."""
    lines = [headline(alert), "", summary_line(alert), ""]
    if alert.kind == KIND_CHECK:
        lines += [
            f"Asset:            {alert.asset_key}",
            f"Check:            {alert.check_name}",
            f"Rule:             {alert.rule}",
            f"Severity:         {alert.severity}",
            f"Violations:       {format_number(alert.count)}",
            *(
                [f"New since last:   {format_number(alert.new_count)}"]
                if alert.new_count is not None and alert.change != CHANGE_RESOLVED
                else []
            ),
            f"Credits at stake: {format_number(alert.credits_at_stake)}",
        ]
    lines += [
        f"Run:              {alert.run_id or 'none (runless event)'}",
        f"Detected at:      {alert.timestamp}",
        "",
    ]
    if alert.description and alert.kind != KIND_RUN_FAILURE:
        lines += [alert.description, ""]
    if alert.worst_users and alert.change != CHANGE_RESOLVED:
        lines += ["Worst users:", "", alert.worst_users, ""]
    if alert.runbook_url and alert.change != CHANGE_RESOLVED:
        lines += [f"What to do:       {alert.runbook_url}"]
    lines += [f"Open in Dagster:  {link_target(alert)}", f"Alert id:         {alert.alert_id}"]
    return lines


def slack_payload(digest: Digest) -> dict[str, Any]:
    """Incoming-webhook body: `text` for notifications and old clients, `blocks` for the layout.

    Slack does not render Markdown tables, so the worst users go in a preformatted block.
    """
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": truncate(digest_title(digest), SLACK_HEADER_LIMIT),
            },
        }
    ]
    for alert in digest.alerts[:SLACK_MAX_ALERT_BLOCKS]:
        fields = [
            ("Change", CHANGE_LABELS.get(alert.change, alert.change)),
            ("Severity", alert.severity),
        ]
        if alert.kind == KIND_CHECK:
            fields += [
                ("Rule", f"`{alert.rule}`"),
                ("Check", f"`{alert.check_name}`"),
                ("Violations", format_number(alert.count)),
                ("Credits at stake", format_number(alert.credits_at_stake)),
            ]
        text = f"*{headline(alert)}*\n{summary_line(alert)}"
        if alert.worst_users and alert.change != CHANGE_RESOLVED:
            fence = "```"
            text += f"\n*Worst users*\n{fence}{alert.worst_users}{fence}"
        links = [f"<{link_target(alert)}|Open in Dagster>"]
        if alert.runbook_url and alert.change != CHANGE_RESOLVED:
            links.append(f"<{alert.runbook_url}|What to do>")
        text += "\n" + " · ".join(links)
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": truncate(text, SLACK_SECTION_LIMIT)},
            }
        )
        blocks.append(
            {
                "type": "section",
                "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in fields],
            }
        )
    if len(digest.alerts) > SLACK_MAX_ALERT_BLOCKS:
        more = len(digest.alerts) - SLACK_MAX_ALERT_BLOCKS
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"…and {more} more."}})
    if digest.still_failing:
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": "Still failing, unchanged: "
                        + truncate(", ".join(digest.still_failing), SLACK_SECTION_LIMIT - 40),
                    }
                ],
            }
        )
    text = f"{digest_title(digest)} — " + " ".join(
        f"{headline(a)}: {summary_line(a)}" for a in digest.alerts[:5]
    )
    if digest.run_url:
        text += f" {digest.run_url}"
    return {"text": truncate(text, SLACK_SECTION_LIMIT), "blocks": blocks}


def email_subject(digest: Digest) -> str:
    return truncate(f"[{PIPELINE_NAME}] {digest_title(digest)}", EMAIL_SUBJECT_LIMIT)


def email_body(digest: Digest) -> str:
    """Plain text on purpose: the worst-users Markdown table stays aligned in any mail client."""
    lines = [digest_title(digest), ""]
    if digest.run_url:
        lines += [f"Run: {digest.run_url}", ""]
    for alert in digest.alerts:
        lines += ["-" * 72, *alert_lines(alert), ""]
    if digest.still_failing:
        still = ", ".join(digest.still_failing)
        lines += ["-" * 72, f"Still failing, unchanged (not repeated): {still}"]
    return "\n".join(lines)


def json_payload(digest: Digest) -> dict[str, Any]:
    """The generic webhook document: the digest, every alert's fields, plus readable sentences."""
    return {
        "source": PIPELINE_NAME,
        "title": digest_title(digest),
        "new_violations": new_violations(digest),
        **digest.to_dict(),
        "alerts": [
            {"title": headline(a), "summary": summary_line(a), **a.to_dict()} for a in digest.alerts
        ],
    }


def pagerduty_dedup_key(alert: Alert) -> str:
    """Stable per problem, so the resolve of a later run closes the incident its trigger opened."""
    return f"{PIPELINE_NAME}:{alert.state_key or alert.alert_id}"


def pagerduty_events(digest: Digest, routing_key: str) -> list[dict[str, Any]]:
    """PagerDuty Events API v2 documents: a `trigger` per new/worse/failed, a `resolve` per fix."""
    events: list[dict[str, Any]] = []
    for alert in digest.alerts:
        dedup_key = pagerduty_dedup_key(alert)
        if alert.change == CHANGE_RESOLVED:
            events.append(
                {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key}
            )
            continue
        severity = (
            PAGERDUTY_RUN_FAILURE_SEVERITY
            if alert.kind == KIND_RUN_FAILURE
            else PAGERDUTY_SEVERITY.get(alert.severity, "error")
        )
        links = [{"href": link_target(alert), "text": "Open in Dagster"}]
        if alert.runbook_url:
            links.append({"href": alert.runbook_url, "text": "What to do (runbook)"})
        events.append(
            {
                "routing_key": routing_key,
                "event_action": "trigger",
                "dedup_key": dedup_key,
                "payload": {
                    "summary": truncate(
                        f"{headline(alert)} — {summary_line(alert)}", PAGERDUTY_SUMMARY_LIMIT
                    ),
                    "source": PIPELINE_NAME,
                    "severity": severity,
                    "timestamp": alert.timestamp,
                    "component": alert.asset_key,
                    "group": alert.kind,
                    "class": alert.rule,
                    "custom_details": {
                        "change": alert.change,
                        "rule": alert.rule,
                        "check": alert.check_name,
                        "violations": alert.count,
                        "new_violations": alert.new_count,
                        "credits_at_stake": alert.credits_at_stake,
                        "previous_violations": alert.previous_count,
                        "previous_credits_at_stake": alert.previous_credits_at_stake,
                        "worst_users": alert.worst_users,
                        "description": alert.description,
                        "run_id": alert.run_id,
                    },
                },
                "links": links,
            }
        )
    return events
