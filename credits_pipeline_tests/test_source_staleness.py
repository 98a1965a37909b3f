"""A source that stopped writing its ledger is stale, and the pipeline says so (a WARN check).

Built on a real SQLite source database (the harness's tiny `syllaby_v2`), with the newest ledger
row either old or recent, and the check run the way the hourly job runs it. The marts and the churn
model read the same age (`CREDITS_SOURCE_STALE_AFTER_HOURS`): a dbt build step passes it as a var.
"""

import datetime as dt
import re

import dagster as dg
import pytest
import sqlalchemy as sa

from credits_pipeline import settings
from credits_pipeline.analytics.assets import stale_after as churn_stale_after
from credits_pipeline.dbt_vars import SOURCE_STALE_AFTER_VAR, build_vars_args, project_vars
from credits_pipeline.extract.assets import extraction_assets, source_table_specs
from credits_pipeline.extract.lag import (
    LAG_CHECK_JOB_NAME,
    SOURCE_READ_METADATA,
    SOURCE_STALENESS_CHECK,
    lag_check_job,
    ledger_lag_check,
    source_age,
    source_staleness_check,
)
from credits_pipeline.names import LEDGER_LAG_CHECK
from credits_pipeline.source.resource import SourceDatabase
from credits_pipeline.transform.assets import DbtBuildConfig, build_args
from credits_pipeline.transform.dbt_project import dbt_environment
from credits_pipeline.warehouse.duckdb_warehouse import DuckDBWarehouse
from credits_pipeline_tests.dbt_duckdb import dbt_resource, prepare_manifest
from credits_pipeline_tests.harness import ledger_row, run_extraction, write_source


def _lag_check_definitions(url: str, warehouse: str) -> dg.Definitions:
    """The extraction and the hourly lag job's two checks, on a source and a warehouse file."""
    return dg.Definitions(
        assets=[*source_table_specs, *extraction_assets],
        asset_checks=[ledger_lag_check, source_staleness_check],
        jobs=[lag_check_job],
        resources={"source": SourceDatabase(url=url), "warehouse": DuckDBWarehouse(path=warehouse)},
    )


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
    defs = _lag_check_definitions(url, warehouse)
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


def test_after_a_cut_the_checks_ask_the_source_only_about_ids_above_it_unless_it_went_back(
    tmp_path, monkeypatch
):
    """Rows the cut read are the warehouse's: the checks read the ids above the cut's highest (a
    primary-key range; `max(created_at)` over the whole ledger is a scan on the contract's schema)
    and still see a row written since. A source whose highest id fell below the cut's is not the
    one the warehouse read: it is asked whole, and its old newest row makes it stale."""
    monkeypatch.delenv(settings.SOURCE_STALE_AFTER_HOURS_VAR, raising=False)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    url = f"sqlite:///{tmp_path / 'source.db'}"
    engine = write_source(
        url,
        [
            ledger_row(1, 1, 1, 500, 0, now - dt.timedelta(days=10)),
            ledger_row(2, 1, 2, 15, 500, now - dt.timedelta(days=5)),
        ],
    )
    warehouse = str(tmp_path / "warehouse.duckdb")
    defs = _lag_check_definitions(url, warehouse)

    def evaluations() -> dict[str, dg.AssetCheckEvaluation]:
        result = defs.resolve_job_def(LAG_CHECK_JOB_NAME).execute_in_process(instance=instance)
        return {e.check_name: e for e in result.get_asset_check_evaluations()}

    with dg.instance_for_test() as instance:
        run_extraction(instance, url, warehouse)
        written_since = now - dt.timedelta(hours=1)
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "insert into credit_histories (id, user_id, credit_events_id, "
                    "calculative_index, event_value, amount, previous_amount, event_type, "
                    "created_at) values (3, 1, 2, 1, 15, 15, 485, 2, :at)"
                ),
                {"at": written_since},
            )
        after_new_row = evaluations()
        with engine.begin() as conn:
            conn.execute(sa.text("delete from credit_histories where id >= 2"))
        went_back = evaluations()
    engine.dispose()

    staleness, lag = after_new_row[SOURCE_STALENESS_CHECK], after_new_row[LEDGER_LAG_CHECK]
    assert staleness.metadata[SOURCE_READ_METADATA].value.startswith("ids above 2 ")
    assert staleness.passed and staleness.metadata["source_age_hours"].value < 2
    assert lag.metadata["source_newest_created_at"].value == str(written_since)
    assert lag.metadata["lag_hours"].value == pytest.approx(5 * 24 - 1, abs=0.01)
    staleness = went_back[SOURCE_STALENESS_CHECK]
    assert staleness.metadata[SOURCE_READ_METADATA].value == "the whole ledger"
    assert not staleness.passed and staleness.metadata["source_age_hours"].value >= 10 * 24


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
