"""The production Dagster instance (deploy/dagster.yaml): runs, events and schedules in
PostgreSQL, and run monitoring for runs whose worker died."""

from __future__ import annotations

import datetime as dt
import shutil

import dagster as dg
import pytest
import sqlalchemy as sa

from credits_pipeline import settings
from credits_pipeline.schedules import DAILY_JOB_NAME
from credits_pipeline.source.demo import generate


@pytest.mark.postgres
def test_the_daily_job_runs_on_a_postgresql_instance_and_its_run_reads_back(
    tmp_path, monkeypatch, fresh_postgres_url
):
    url = sa.engine.make_url(fresh_postgres_url)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(settings.PROJECT_ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    for var, value in {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": url.host,
        "DAGSTER_PG_PORT": str(url.port),
        "DAGSTER_PG_DB": url.database,
        "DAGSTER_PG_USERNAME": url.username,
        "DAGSTER_PG_PASSWORD": "unused-with-trust-auth",
    }.items():
        monkeypatch.setenv(var, value)
    source = f"sqlite:///{tmp_path / 'syllaby_v2.sqlite'}"
    generate(source, users=25, seed=3, end=dt.date(2025, 3, 1), months=2)
    monkeypatch.setenv(settings.SOURCE_URL_VAR, source)
    monkeypatch.setenv(settings.WAREHOUSE_PATH_VAR, str(tmp_path / "warehouse.duckdb"))

    from credits_pipeline.definitions import build_definitions, prepare_for_run

    prepare_for_run()
    job = build_definitions().resolve_job_def(DAILY_JOB_NAME)
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        result = job.execute_in_process(
            instance=instance, partition_key="2025-02-27", raise_on_error=False
        )
        assert result.success
        [record] = instance.get_run_records(dg.RunsFilter(run_ids=[result.run_id]))
        assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        assert record.dagster_run.tags["dagster/partition"] == "2025-02-27"
        materialized = instance.fetch_materializations(
            dg.AssetKey(["raw", "credit_histories"]), limit=5
        )
        assert [m.asset_materialization.partition for m in materialized.records] == ["2025-02-27"]

    # the tables really live in the PostgreSQL database, not in a file under DAGSTER_HOME
    with sa.create_engine(fresh_postgres_url).connect() as conn:
        runs = conn.execute(sa.text("select count(*) from runs")).scalar_one()
        events = conn.execute(sa.text("select count(*) from event_logs")).scalar_one()
    assert runs == 1 and events > 20


def test_the_production_instance_fails_runs_whose_worker_died_through_run_monitoring(tmp_path):
    """`deploy/dagster.yaml` read and validated by Dagster itself, its `run_monitoring` applied.

    Without the section a run whose worker was killed stays STARTED forever and, with the
    `credits_daily` tag limit of 1, blocks every later daily run in the queue.
    """
    from dagster._core.instance.config import dagster_instance_config

    config, _ = dagster_instance_config(str(settings.PROJECT_ROOT / "deploy"))
    monitoring = config.get("run_monitoring") or {}
    assert monitoring.get("enabled") is True, "deploy/dagster.yaml: run_monitoring is not enabled"
    home = tmp_path / "dagster_home"
    home.mkdir()
    overrides = {"run_monitoring": monitoring}
    with dg.instance_for_test(temp_dir=str(home), overrides=overrides) as instance:
        assert instance.run_monitoring_enabled
        assert "MONITORING" in instance.get_required_daemon_types()
        assert instance.run_monitoring_start_timeout_seconds > 0
        # the default run launcher cannot check or resume its workers: the run time limit fails
        # a run whose worker died, and a resume is never attempted
        assert not instance.run_launcher.supports_check_run_worker_health
        assert instance.run_monitoring_max_runtime_seconds > 0
        assert instance.run_monitoring_max_resume_run_attempts == 0
