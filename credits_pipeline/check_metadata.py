"""The metadata keys a failing check carries to people and to the alert sensor, spelled once.

The ledger checks write these keys and the alert sensor reads them. When each side spelled its own
(`violations` vs `count`, `credits_involved` vs `credits`), every alert said "n/a" while the UI
showed the numbers; one module imported by both makes that mismatch impossible. Any check of the
code location may attach them (all optional): the sensor shows what it finds.
"""

from __future__ import annotations

RULE = "rule"  # the rule code (contract section 3) or another check's own short name
SEVERITY = "severity"  # ERROR or WARN, as the check declares it
VIOLATIONS = "violations"  # how many violations (int)
CREDITS_AT_STAKE = "credits_involved"  # credits the violations involve (int or float)
WORST_USERS = "worst_users"  # the worst violations as a Markdown table, with expected/actual
WORST_USER_IDS = "worst_user_ids"  # the users of those violations, comma-separated
RUNBOOK = "runbook"  # the runbook section saying what to do next (a URL or a repo path)
DETECTED_AT = "detected_at"  # the extraction cut-off the check measured from
# violations first reported at this run's cut-off (their `first_detected_at`): "new since the last
# run" as a fact from the stored anomalies, not a guess from the count going up (int); a re-run at
# the same cut-off reports the same number
NEW_VIOLATIONS = "new_violations"
# On the reconciliation's materialization when rules fail and no alert channel is configured: the
# line (plain text) the run summary repeats, so a run that alerts nobody says so where it ends.
NO_ALERT_CHANNEL = "no_alert_channel"
