"""Where the "what next" of every ledger rule lives: `docs/runbook.md`, one section per rule.

Checks link their rule's section in their description and every alert carries the same link, so
the person woken up by an alert lands on the business meaning, the likely causes and the query to
run. The anchors are the rule codes (`<a id="chain_break">` in the Markdown), stable across edits
of the headings. The base is the repository path by default; a deployment that publishes the docs
(a Git host, an internal wiki) sets `CREDITS_RUNBOOK_URL` to the published page so links click.
"""

from __future__ import annotations

import os

RUNBOOK_PATH = "docs/runbook.md"
RUNBOOK_URL_VAR = "CREDITS_RUNBOOK_URL"
RUN_FAILURE_ANCHOR = "run-failure"
STALE_SOURCE_ANCHOR = "stale-source"


def runbook_base() -> str:
    """`CREDITS_RUNBOOK_URL` when set (the published runbook page), else the repository path."""
    return (os.environ.get(RUNBOOK_URL_VAR) or "").strip() or RUNBOOK_PATH


def runbook_link(anchor: str) -> str:
    """The runbook section for a rule code (or another anchor of the runbook)."""
    return f"{runbook_base()}#{anchor}"
