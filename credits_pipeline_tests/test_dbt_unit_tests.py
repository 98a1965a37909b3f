"""dbt unit tests in the pipeline: they run in every `dbt build`, and a failing one is a bug.

The unit tests (models/*/_unit_tests.yml) pin the logic that is easy to get wrong — signing and
classifying the ledger, revenue attribution, churn reasons, usage-risk thresholds, the cost of a
completed item — on hand-made rows. dagster-dbt reports no result for them, so the pipeline's
dbt step does: a failing unit test fails the step with its name, and dbt builds everything but
the model it tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest
from dagster_dbt import DbtCliResource, DbtProject, dbt_assets

from credits_pipeline import settings
from credits_pipeline.transform import prepare_manifest
from credits_pipeline.transform.assets import CREDITS_LAYER_SELECT, DBT_TRANSLATOR, build_layer
from credits_pipeline.transform.dbt_project import dbt_cli_resource
from credits_pipeline.warehouse.duckdb_warehouse import DuckDBWarehouse
from credits_pipeline_tests.dbt_builds import dbt_build
from credits_pipeline_tests.dbt_duckdb import PROJECT
from credits_pipeline_tests.test_dbt_models import write_fixture_warehouse

SHORT_NAME = 72  # as test_check_descriptions.py: names the UI and the logs show whole
UNIT_TESTED_MODELS = {
    "credit_histories",
    "credit_events",
    "revenue_attribution",
    "user_credit_trends",
    "usage_risk_signals",
    "service_efficiency",
    "int_ledger_row_plans",
}
BROKEN_UNIT_TEST = "credit_histories_signs_and_classifies_each_row"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The fixture ledger built with `dbt build`: (warehouse, status of every node)."""
    prepare_manifest(PROJECT)
    warehouse = tmp_path_factory.mktemp("unit") / "warehouse.duckdb"
    write_fixture_warehouse(warehouse)
    with pytest.MonkeyPatch.context() as monkeypatch:
        statuses = dbt_build(warehouse, monkeypatch)
    return warehouse, statuses


def test_every_unit_test_runs_in_dbt_build_passes_and_is_named_and_described(built):
    _, statuses = built
    manifest = json.loads(PROJECT.manifest_path.read_text())
    unit_tests = manifest["unit_tests"]
    assert {test["model"] for test in unit_tests.values()} == UNIT_TESTED_MODELS
    for unique_id, test in unit_tests.items():
        assert statuses.get(unique_id) == "pass", unique_id
        assert len(test["name"]) <= SHORT_NAME, test["name"]
        assert len(test["description"].split()) >= 10, test["name"]


def test_a_failing_unit_test_fails_the_step_by_name_and_holds_back_only_its_model(
    built, tmp_path, monkeypatch
):
    warehouse, _ = built
    project = tmp_path / "dbt_transform"
    shutil.copytree(
        settings.DBT_PROJECT_DIR,
        project,
        ignore=shutil.ignore_patterns("target", "logs", "dbt_packages", ".user.yml"),
    )
    unit_tests = project / "models" / "staging" / "_unit_tests.yml"
    text = unit_tests.read_text()
    right = "{credit_history_id: 4, event_name: idea_discovered, amount: 15,"
    assert right in text
    # a sign error as a bug would make it: the spend recorded with event_type 1 signed by effect
    unit_tests.write_text(text.replace(right, right.replace("amount: 15", "amount: -15")))
    monkeypatch.setenv(settings.WAREHOUSE_PATH_VAR, str(warehouse))
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    broken = DbtProject(project_dir=project, profiles_dir=project, target="duckdb")

    # the pipeline's credits step (transform/assets.py), over the broken copy of the project
    @dbt_assets(
        manifest=prepare_manifest(broken),
        project=broken,
        dagster_dbt_translator=DBT_TRANSLATOR,
        select=CREDITS_LAYER_SELECT,
    )
    def credits_layer(context, dbt: DbtCliResource):
        yield from build_layer(context, dbt, DuckDBWarehouse(path=str(warehouse)), broken)

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [credits_layer],
            resources={"dbt": dbt_cli_resource(broken)},
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert BROKEN_UNIT_TEST in failure.step_failure_data.error.message
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert dg.AssetKey(["credits", "credit_events"]) in materialized
    assert dg.AssetKey(["credits", "credit_histories"]) not in materialized
