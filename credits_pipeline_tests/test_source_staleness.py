"""A source that stopped writing its ledger is stale, and the pipeline says so (a WARN check).

Built on a real SQLite source database (the harness's tiny `syllaby_v2`), with the newest ledger
row either old or recent, and the check run the way the hourly job runs it. The marts and the churn
model read the same age (`CREDITS_SOURCE_STALE_AFTER_HOURS`): a dbt build step passes it as a var.
"""

import datetime as dt
import re

import dagster as dg
import pytest

from credits_pipeline import settings
from credits_pipeline.analytics.assets import stale_after as churn_stale_after
from credits_pipeline.dbt_vars import SOURCE_STALE_AFTER_VAR, build_vars_args, project_vars
from credits_pipeline.extract.assets import extraction_assets, source_table_specs
from credits_pipeline.extract.lag import (
    LAG_CHECK_JOB_NAME,
    SOURCE_STALENESS_CHECK,
    lag_check_job,
    ledger_lag_check,
    source_age,
    source_staleness_check,
)
from credits_pipeline.source.resource import SourceDatabase
from credits_pipeline.transform.assets import DbtBuildConfig, build_args
from credits_pipeline.transform.dbt_project import dbt_environment
from credits_pipeline.warehouse.duckdb_warehouse import DuckDBWarehouse
from credits_pipeline_tests.dbt_duckdb import dbt_resource, prepare_manifest
from credits_pipeline_tests.harness import ledger_row, run_extraction, write_source


def _run_checks(tmp_path, newest: dt.datetime) -> dg.AssetCheckEvaluation:
    tmp_path.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{tmp_path / 'source.db'}"
    write_source(
        url,
        [
            ledger_row(1, 1, 1, 500, 0, newest - dt.timedelta(days=3)),
            ledger_row(2, 1, 2, 15, 500, newest),
        ],
    )
    warehouse = str(tmp_path / "warehouse.duckdb")
    defs = dg.Definitions(
        assets=[*source_table_specs, *extraction_assets],
        asset_checks=[ledger_lag_check, source_staleness_check],
        jobs=[lag_check_job],
        resources={"source": SourceDatabase(url=url), "warehouse": DuckDBWarehouse(path=warehouse)},
    )
    with dg.instance_for_test() as instance:
        run_extraction(instance, url, warehouse)  # the warehouse the lag check compares with
        result = defs.resolve_job_def(LAG_CHECK_JOB_NAME).execute_in_process(instance=instance)
    [evaluation] = [
        e for e in result.get_asset_check_evaluations() if e.check_name == SOURCE_STALENESS_CHECK
    ]
    return evaluation


def test_a_source_whose_newest_ledger_row_is_old_warns_that_it_is_stale(tmp_path, monkeypatch):
    monkeypatch.delenv(settings.SOURCE_STALE_AFTER_HOURS_VAR, raising=False)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)

    evaluation = _run_checks(tmp_path, now - dt.timedelta(days=30))

    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert "looks stale" in evaluation.description
    assert evaluation.metadata["source_age_hours"].value >= 30 * 24
    assert evaluation.metadata["stale_after_hours"].value == 48


def test_a_source_written_recently_is_not_stale_and_the_age_is_configurable(tmp_path, monkeypatch):
    monkeypatch.setenv(settings.SOURCE_STALE_AFTER_HOURS_VAR, "2")
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)

    recent = _run_checks(tmp_path / "recent", now - dt.timedelta(minutes=30))
    three_hours = _run_checks(tmp_path / "three_hours", now - dt.timedelta(hours=3))

    assert recent.passed and recent.metadata["stale_after_hours"].value == 2
    assert not three_hours.passed


def test_the_staleness_age_is_measured_from_now_and_a_bad_setting_names_the_variable(monkeypatch):
    now = dt.datetime(2025, 6, 1, 12)
    assert source_age(now - dt.timedelta(hours=50), now) == dt.timedelta(hours=50)
    assert source_age(None, now) is None
    monkeypatch.setenv(settings.SOURCE_STALE_AFTER_HOURS_VAR, "soon")
    with pytest.raises(ValueError, match=settings.SOURCE_STALE_AFTER_HOURS_VAR):
        settings.source_stale_after()


def test_the_dbt_build_and_the_churn_model_use_the_staleness_age_the_check_uses(monkeypatch):
    monkeypatch.setenv(settings.SOURCE_STALE_AFTER_HOURS_VAR, "2")

    assert build_args(DbtBuildConfig()) == ["build", "--vars", '{"source_stale_after_hours": 2}']
    assert build_args(DbtBuildConfig(full_refresh=True))[:2] == ["build", "--full-refresh"]
    assert churn_stale_after() == settings.source_stale_after() == dt.timedelta(hours=2)

    # the default is dbt_project.yml's own: no --vars, so dbt keeps its partial parse
    monkeypatch.delenv(settings.SOURCE_STALE_AFTER_HOURS_VAR)
    default = settings.DEFAULT_SOURCE_STALE_AFTER_HOURS
    assert float(project_vars()[SOURCE_STALE_AFTER_VAR]) == default
    assert build_args(DbtBuildConfig()) == ["build"]
    assert churn_stale_after() == dt.timedelta(hours=default)


def test_the_trends_mart_compiled_with_the_pipelines_vars_is_stale_after_the_checks_age(
    tmp_path, monkeypatch
):
    """The real dbt compile of `user_credit_trends` with the vars a build step passes: a source
    older than the check's 2.5 hours is stale in the mart too (in whole minutes: 150)."""
    monkeypatch.setenv(settings.SOURCE_STALE_AFTER_HOURS_VAR, "2.5")
    monkeypatch.setenv(settings.WAREHOUSE_PATH_VAR, str(tmp_path / "warehouse.duckdb"))
    prepare_manifest()
    with dbt_environment():
        invocation = dbt_resource().cli(
            ["compile", "--select", "user_credit_trends", *build_vars_args()],
            raise_on_error=False,
        )
    invocation.wait()
    assert invocation.is_successful(), invocation.get_error()

    [compiled] = invocation.target_path.glob("compiled/**/user_credit_trends.sql")
    freshness = compiled.read_text().split("as source_is_stale")[0]
    # DuckDB's dateadd: `cutoff_at + cast(-150 as bigint) * interval 1 minute`
    assert re.search(r"cutoff_at \+ cast\(-150 as bigint\) \* interval 1 minute", freshness)
