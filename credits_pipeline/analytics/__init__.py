"""Analytics over the reconciled ledger: usage-risk checks and the churn model.

The dbt marts hold what SQL answers well (`marts.usage_risk_signals`); this room holds what needs
Python — a model trained and evaluated on the ledger's history (`churn.py`, pure), the Dagster
checks that turn flagged users into WARN check results the alert sensor delivers (`signals.py`),
and the thin asset wiring (`assets.py`).
"""

from credits_pipeline.analytics.assets import analytics_assets, usage_risk_checks

__all__ = ["analytics_assets", "usage_risk_checks"]
