"""Runs the CLI did not start carry the same failed-check tags as the CLI's own runs.

The daily job of the real code location runs in-process (as the schedule or a UI launch runs it)
on a tiny source with a chain break (an ERROR ledger rule) and an undated ledger row (the WARN rule
`timestamp_order`); the success sensor then tags the run, and the CLI's own report, given the same
run's events, must arrive at the same numbers. A failed run (a source table missing) is tagged by
the failure sensor the same way. Both sensors are registered in the code location and on.
"""

from __future__ import annotations

import re

import dagster as dg

from credits_pipeline import settings
from credits_pipeline.cli import report
from credits_pipeline.run_summary import PlanShape
from credits_pipeline.run_tag_sensors import (
    FAILURE_SENSOR_NAME,
    SUCCESS_SENSOR_NAME,
    check_tags_on_failure,
    check_tags_on_success,
)
from credits_pipeline.run_tags import FAILED_ERROR_CHECKS_TAG, FAILED_WARN_CHECKS_TAG
from credits_pipeline.schedules import DAILY_JOB_NAME
from credits_pipeline_tests.harness import (
    clean_ledger,
    code_location_definitions,
    run_extraction,
    write_source,
)

TAGS = (FAILED_ERROR_CHECKS_TAG, FAILED_WARN_CHECKS_TAG)
PARTITION = "2025-01-02"  # a day of the harness ledger (2025-01-01 .. 2025-01-03)


def _ledger_with_a_chain_break_and_an_undated_row() -> list[dict]:
    rows = clean_ledger()  # its last row has no created_at: `timestamp_order` (WARN)
    rows[1]["previous_amount"] = 400  # user 1 had 500 before this spend: `chain_break` (ERROR)
    return rows


def _failed_check_tags(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    tags = instance.get_run_by_id(run_id).tags
    return {name: tags[name] for name in TAGS if name in tags}


def _cli_report(instance: dg.DagsterInstance, run_id: str, capsys) -> tuple[dict[str, str], str]:
    """What `credits-pipeline materialize` tags and prints for this run, from its own events."""
    run = instance.get_run_by_id(run_id)
    events = [r.dagster_event for r in instance.all_logs(run_id) if r.dagster_event]
    plan = PlanShape.from_snapshot(
        instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    )
    capsys.readouterr()
    report(instance, run_id, events, plan)
    return _failed_check_tags(instance, run_id), capsys.readouterr().out


def _status_event(result: dg.ExecuteInProcessResult, kind: dg.DagsterEventType):
    [event] = [e for e in result.all_events if e.event_type == kind]
    return event


def test_a_daily_run_the_cli_did_not_start_gets_the_clis_failed_check_counts(
    tmp_path, monkeypatch, capsys
):
    url = f"sqlite:///{tmp_path / 'syllaby_v2.sqlite'}"
    write_source(url, _ledger_with_a_chain_break_and_an_undated_row())
    monkeypatch.setenv(settings.SOURCE_URL_VAR, url)
    monkeypatch.setenv(settings.WAREHOUSE_PATH_VAR, str(tmp_path / "warehouse.duckdb"))
    from credits_pipeline.definitions import build_definitions, prepare_for_run

    prepare_for_run()
    job = build_definitions().resolve_job_def(DAILY_JOB_NAME)
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance, partition_key=PARTITION, raise_on_error=False
        )
        assert result.success
        assert _failed_check_tags(instance, result.run_id) == {}  # nobody tagged it yet

        check_tags_on_success(
            dg.build_run_status_sensor_context(
                sensor_name=SUCCESS_SENSOR_NAME,
                dagster_instance=instance,
                dagster_run=instance.get_run_by_id(result.run_id),
                dagster_event=_status_event(result, dg.DagsterEventType.RUN_SUCCESS),
            )
        )
        by_sensor = _failed_check_tags(instance, result.run_id)
        by_cli, printed = _cli_report(instance, result.run_id, capsys)

    assert by_sensor == by_cli
    errors, warns = int(by_sensor[FAILED_ERROR_CHECKS_TAG]), int(by_sensor[FAILED_WARN_CHECKS_TAG])
    assert errors >= 1 and warns >= 1, by_sensor
    assert f"checks failed: {errors + warns} ({errors} ERROR, {warns} WARN)" in printed
    assert re.search(r":ledger_rule_chain_break +│ ERROR", printed), printed
    assert re.search(r":ledger_rule_timestamp_order +│ WARN", printed), printed


def test_a_failed_run_is_tagged_too_and_a_run_the_cli_tagged_is_left_alone(
    tmp_path, monkeypatch, capsys
):
    url = f"sqlite:///{tmp_path / 'syllaby_v2.sqlite'}"
    rows = clean_ledger()
    rows[0]["meta"] = "{not json"  # quarantined: the WARN check `pandera_validation` fails
    engine = write_source(url, rows)
    with engine.begin() as conn:
        conn.exec_driver_sql("drop table plans")  # the run fails: raw/plans cannot be read
    engine.dispose()
    with dg.instance_for_test() as instance:
        result = run_extraction(instance, url, str(tmp_path / "warehouse.duckdb"))
        assert not result.success
        context = dg.build_run_status_sensor_context(
            sensor_name=FAILURE_SENSOR_NAME,
            dagster_instance=instance,
            dagster_run=instance.get_run_by_id(result.run_id),
            dagster_event=_status_event(result, dg.DagsterEventType.RUN_FAILURE),
        )
        check_tags_on_failure(context)
        by_sensor = _failed_check_tags(instance, result.run_id)
        by_cli, _ = _cli_report(instance, result.run_id, capsys)
        # the CLI's run already carries its counts: a sensor tick leaves them as they are
        instance.add_run_tags(result.run_id, {FAILED_WARN_CHECKS_TAG: "cli"})
        check_tags_on_failure(context.for_run_failure())
        kept = _failed_check_tags(instance, result.run_id)[FAILED_WARN_CHECKS_TAG]

    assert by_sensor == by_cli
    assert int(by_sensor[FAILED_WARN_CHECKS_TAG]) >= 1 and by_sensor[FAILED_ERROR_CHECKS_TAG] == "0"
    assert kept == "cli"


def test_the_code_location_runs_both_tag_sensors(monkeypatch):
    defs = code_location_definitions(monkeypatch)
    for name in (SUCCESS_SENSOR_NAME, FAILURE_SENSOR_NAME):
        sensor = defs.resolve_sensor_def(name)
        assert isinstance(sensor, dg.RunStatusSensorDefinition), name
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING, name
