"""The dbt vars of `dbt_project.yml`, and the one the pipeline's settings decide for dbt.

Why: the source-staleness check (`extract/lag.py`) reads `CREDITS_SOURCE_STALE_AFTER_HOURS`, while
`marts.user_credit_trends` reads the dbt var `source_stale_after_hours`. Two settings can disagree
— the check warning "stale" after 2 hours while the mart still calls everyone inactive after 48 —
so the environment variable is the one truth: every dbt build the pipeline starts gets its value
as `--vars` (`build_vars_args`), and the churn model reads the setting itself.
`dbt_project.yml` keeps a default only for a bare `dbt` run from a shell (tests hold it equal to
the setting's default).

The var is passed only when it differs from that default: dbt re-parses the whole project when its
command-line vars differ from those its saved parse state was built with, and the manifest is
parsed without any (`prepare_manifest`), so passing the default on every step would cost each
step a full parse for nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import yaml

from credits_pipeline import settings

SOURCE_STALE_AFTER_VAR = "source_stale_after_hours"
VARS_FLAG = "--vars"


def project_vars() -> dict[str, Any]:
    """The `vars:` of `dbt_project.yml` (the defaults a bare `dbt` run uses)."""
    with open(settings.DBT_PROJECT_DIR / "dbt_project.yml") as f:
        return dict(yaml.safe_load(f).get("vars") or {})


def _hours(age: dt.timedelta) -> int | float:
    hours = age.total_seconds() / 3600
    return int(hours) if hours.is_integer() else hours


def pipeline_vars() -> dict[str, Any]:
    """The dbt vars the pipeline's settings decide, where they differ from the project's."""
    hours = _hours(settings.source_stale_after())
    if float(project_vars().get(SOURCE_STALE_AFTER_VAR, -1)) == float(hours):
        return {}
    return {SOURCE_STALE_AFTER_VAR: hours}


def build_vars_args() -> list[str]:
    """`--vars` for a dbt command of the pipeline (nothing when every var is the project's)."""
    variables = pipeline_vars()
    return [VARS_FLAG, json.dumps(variables, sort_keys=True)] if variables else []
