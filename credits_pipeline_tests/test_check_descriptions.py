"""Every asset check reads well in the UI: a short name, a description, and no repeated ledger rule.

The Dagster UI cuts long check names in the middle and shows a check without a description as a
bare name; a dbt test that repeats a ledger rule doubles every failure. These tests read the real
definitions (the manifest rebuilt from the YAML) and the real rule checks, and the whole code
location as it loads.
"""

import json

import dagster as dg
import pytest

from credits_pipeline import settings
from credits_pipeline.analytics import signals
from credits_pipeline.extract.assets import CLOSED_DAYS_CHECK
from credits_pipeline.extract.lag import ledger_lag_check, source_staleness_check
from credits_pipeline.ledger import reconciliation_assets
from credits_pipeline.ledger import rules_catalog as rc
from credits_pipeline.names import VALIDATION_CHECK
from credits_pipeline.source.drift import SCHEMA_DRIFT_CHECK
from credits_pipeline.source.resource import SourceDatabase
from credits_pipeline.transform.translator import dbt_test_description
from credits_pipeline.warehouse.duckdb_warehouse import DuckDBWarehouse
from credits_pipeline_tests.dbt_duckdb import dbt_credit_assets, dbt_resource, prepare_manifest
from credits_pipeline_tests.harness import code_location_definitions

SHORT_NAME = 72  # the credits layer's generated names reached 123; the UI cuts long names


@pytest.fixture(scope="module")
def check_specs(tmp_path_factory) -> list[dg.AssetCheckSpec]:
    prepare_manifest()
    warehouse = DuckDBWarehouse(path=str(tmp_path_factory.mktemp("wh") / "warehouse.duckdb"))
    defs = dg.Definitions(
        assets=[*dbt_credit_assets, *reconciliation_assets],
        asset_checks=[ledger_lag_check, source_staleness_check],
        resources={"dbt": dbt_resource(), "warehouse": warehouse, "source": SourceDatabase()},
    )
    graph = defs.resolve_asset_graph()
    return [graph.get_check_spec(key) for key in graph.asset_check_keys]


def test_every_check_has_a_description_and_a_short_name(check_specs):
    assert len(check_specs) > 40
    for spec in check_specs:
        assert spec.description and len(spec.description) > 20, spec.name
        assert len(spec.name) <= SHORT_NAME, spec.name


def test_every_check_of_the_assembled_code_location_has_a_description_and_a_short_name(
    tmp_path, monkeypatch
):
    """All of them, as `make ui` loads them: the extraction's validation, schema drift and
    closed days, the lag and staleness checks, the ledger rules, dbt tests and usage-risk checks."""
    monkeypatch.setenv(settings.WAREHOUSE_PATH_VAR, str(tmp_path / "warehouse.duckdb"))
    graph = code_location_definitions(monkeypatch).resolve_asset_graph()
    specs = [graph.get_check_spec(key) for key in graph.asset_check_keys]

    names = {spec.name for spec in specs}
    every_kind = {
        VALIDATION_CHECK,
        SCHEMA_DRIFT_CHECK,
        CLOSED_DAYS_CHECK,
        *(
            spec.name
            for check in (ledger_lag_check, source_staleness_check)
            for spec in check.check_specs
        ),
        *rc.CHECK_NAMES.values(),
        *(signals.check_name(signal) for signal in signals.SIGNALS),
    }
    assert every_kind <= names, sorted(every_kind - names)
    assert len(specs) > 100  # and the dbt tests besides
    for spec in specs:
        where = f"{spec.asset_key.to_user_string()}:{spec.name}"
        assert spec.description and len(spec.description) > 20, where
        assert len(spec.name) <= SHORT_NAME, where


def test_dbt_tests_that_repeated_a_ledger_rule_are_gone_or_say_which_rule_they_repeat(check_specs):
    names = {spec.name for spec in check_specs}
    # orphan_user, orphan_event and orphan_creditable list these rows with their credits
    assert not any(name.startswith("relationships_credit_histories") for name in names)
    assert "accepted_values_credit_histories_creditable_type" not in " ".join(names)
    chain = next(s for s in check_specs if "chain_adjustment" in s.name)
    assert f"Repeats the ledger rule `{rc.CHAIN_BREAK}`" in chain.description
    assert f"#{rc.CHAIN_BREAK}" in chain.description


def test_a_test_without_its_own_description_gets_one_from_what_it_checks():
    props = {
        "attached_node": "model.credits_transform.user_credit_daily",
        "column_name": "balance_date",
        "config": {"severity": "error"},
        "test_metadata": {"name": "not_null", "kwargs": {"column_name": "balance_date"}},
    }
    assert dbt_test_description(props) == (
        "`user_credit_daily.balance_date` is never NULL. "
        "(ERROR: a failure blocks the assets downstream.)"
    )
    props["description"] = "Every day has a date."
    assert dbt_test_description(props).startswith("Every day has a date. (ERROR")
    assert json.dumps(props)  # plain manifest data, nothing else
