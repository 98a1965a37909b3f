"""Failed-check counts on every run, not only on the runs the CLI starts.

`credits-pipeline materialize` tags its run with `credits/failed_error_checks` and
`credits/failed_warn_checks`, so a green "Success" that found six money-rule violations says so in
the runs list. Runs started by the daily schedule, the hourly lag job, the observation or a click
in the UI have no CLI around them to do it; these two run-status sensors do (a run-status sensor
hears one status, hence one for success and one for failure: a failed run's checks count too).
They read the run's `ASSET_CHECK_EVALUATION` events from the instance and count them with the
CLI's own function (`run_summary.failed_check_tags`), so the same run can never carry two
different numbers. A run that already carries both tags (the CLI's) is left as it is.
"""

from __future__ import annotations

import dagster as dg

from credits_pipeline.run_summary import failed_check_tags, failed_checks
from credits_pipeline.run_tags import FAILED_ERROR_CHECKS_TAG, FAILED_WARN_CHECKS_TAG

SUCCESS_SENSOR_NAME = "credits_check_tags_on_success"
FAILURE_SENSOR_NAME = "credits_check_tags_on_failure"
DESCRIPTION = (
    "Tags every {status} run with its failed check counts ("
    f"`{FAILED_ERROR_CHECKS_TAG}`, `{FAILED_WARN_CHECKS_TAG}`), as the CLI tags its own runs."
)


def tag_failed_checks(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dict[str, str] | None:
    """Add the failed-check tags to `run` from its check evaluations; the tags, or None when the
    run already carried both (read from the instance: the CLI may have tagged it meanwhile)."""
    current = instance.get_run_by_id(run.run_id) or run
    if FAILED_ERROR_CHECKS_TAG in current.tags and FAILED_WARN_CHECKS_TAG in current.tags:
        return None
    records = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    tags = failed_check_tags(failed_checks(r.dagster_event for r in records if r.dagster_event))
    instance.add_run_tags(run.run_id, tags)
    return tags


def _tag(context: dg.RunStatusSensorContext) -> None:
    run = context.dagster_run
    tags = tag_failed_checks(context.instance, run)
    if tags is None:
        context.log.info(f"run {run.run_id} already carries its failed check counts")
    else:
        counts = ", ".join(f"{k}={v}" for k, v in tags.items())
        context.log.info(f"run {run.run_id} of {run.job_name}: {counts}")


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name=SUCCESS_SENSOR_NAME,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=DESCRIPTION.format(status="successful"),
)
def check_tags_on_success(context: dg.RunStatusSensorContext) -> None:
    _tag(context)


@dg.run_failure_sensor(
    name=FAILURE_SENSOR_NAME,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=DESCRIPTION.format(status="failed"),
)
def check_tags_on_failure(context: dg.RunFailureSensorContext) -> None:
    _tag(context)
