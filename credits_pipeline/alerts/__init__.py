"""Alerting on failed ledger checks and stale assets, delivered to Slack, email and a JSON webhook.

A failed non-blocking asset check does not fail its run, so run-failure sensors never see it; this
package reads the event log instead (`sensor.py`), turns each failed evaluation into one `Alert`
(`messages.py`) and hands it to every channel enabled by the environment (`channels.py`).
"""

from __future__ import annotations

from credits_pipeline.alerts.channels import (
    AlertChannel,
    DeliveryError,
    EmailChannel,
    JsonWebhookChannel,
    SlackWebhookChannel,
    channels_from_env,
)
from credits_pipeline.alerts.messages import Alert
from credits_pipeline.alerts.sensor import ALERT_SENSOR_NAME, alert_sensor

__all__ = [
    "ALERT_SENSOR_NAME",
    "Alert",
    "AlertChannel",
    "DeliveryError",
    "EmailChannel",
    "JsonWebhookChannel",
    "SlackWebhookChannel",
    "alert_sensor",
    "channels_from_env",
]
