"""Alerting on ledger checks, stale assets and failed runs: Slack, email, a JSON webhook, PagerDuty.

A failed non-blocking asset check does not fail its run, so run-failure sensors never see it; this
package reads the event log instead (`sensor.py`), turns each change of a check's state (new,
worse, resolved) into an `Alert`, gathers a run's alerts into one `Digest` (`messages.py`) and
hands it to every channel enabled by the environment (`channels.py`). Failed runs have their own
sensor (`run_failure.py`) feeding the same channels.
"""

from __future__ import annotations

from credits_pipeline.alerts.channels import (
    AlertChannel,
    DeliveryError,
    EmailChannel,
    JsonWebhookChannel,
    PagerDutyChannel,
    SlackWebhookChannel,
    channels_from_env,
)
from credits_pipeline.alerts.messages import Alert, Digest
from credits_pipeline.alerts.run_failure import RUN_FAILURE_SENSOR_NAME, run_failure_alert_sensor
from credits_pipeline.alerts.sensor import ALERT_SENSOR_NAME, alert_sensor

__all__ = [
    "ALERT_SENSOR_NAME",
    "RUN_FAILURE_SENSOR_NAME",
    "Alert",
    "AlertChannel",
    "DeliveryError",
    "Digest",
    "EmailChannel",
    "JsonWebhookChannel",
    "PagerDutyChannel",
    "SlackWebhookChannel",
    "alert_sensor",
    "channels_from_env",
    "run_failure_alert_sensor",
]
