"""The dbt project's place in the Dagster asset graph: keys, groups, lineage and check severities.

The dbt assets must hang off the extraction's own asset keys (`raw/<table>`), land under
`credits/*` and `marts/*` in groups of the same names, and turn dbt tests into asset checks whose
blocking is chosen on purpose: only a key a model itself produced may block. None of this needs a
warehouse — only the manifest, which `prepare_manifest()` builds from a fresh clone. Column
lineage does: each materialization carries it, parsed from the compiled SQL against the columns
of the built relations, so the last tests build the hand-written ledger of test_dbt_models.py.
"""

from __future__ import annotations

import importlib
import shutil

import dagster as dg
import pytest
from dagster_dbt import DbtProject

from credits_pipeline import settings
from credits_pipeline.source.tables import TABLES
from credits_pipeline.transform import CREDITS_GROUP, MARTS_GROUP, column_lineage
from credits_pipeline.transform import prepare_manifest as prepare_manifest_of
from credits_pipeline.warehouse.duckdb_warehouse import DuckDBWarehouse
from credits_pipeline_tests.dbt_duckdb import (
    dbt_credit_assets,
    dbt_credit_models,
    dbt_mart_models,
    dbt_resource,
    dbt_revenue_model,
    prepare_manifest,
)

RAW_KEYS = {dg.AssetKey(["raw", t.name]) for t in TABLES} | {
    dg.AssetKey(["raw", "credit_histories__open"]),
    dg.AssetKey(["raw", "extraction_cutoff"]),
}
CREDIT_HISTORIES = dg.AssetKey(["credits", "credit_histories"])
RAW_CREDIT_HISTORIES = dg.AssetKey(["raw", "credit_histories"])
MARTS = [
    dg.AssetKey(["marts", name])
    for name in (
        "user_credit_daily",
        "user_credit_trends",
        "service_efficiency",
        "plan_utilization",
        "revenue_attribution",
        "credit_cohorts",
        "usage_risk_signals",
        "user_stored_balance_history",
    )
]
SEED_VIEWS = [dg.AssetKey(["credits", "credit_events"]), CREDIT_HISTORIES]
REPLAYED_LEDGER = dg.AssetKey(["credits", "int_credit_replay"])
# What the marts step builds in `credits`: the reconciliation's replay and a helper built on it.
BUILT_ON_THE_REPLAY = {REPLAYED_LEDGER, dg.AssetKey(["credits", "int_ledger_row_plans"])}
ROW_POOLS = dg.AssetKey(["credits", "ledger_row_pools"])  # the reconciliation's replay
DBT_KEYS = {key for assets in dbt_credit_assets for key in assets.keys}


@pytest.fixture(scope="module")
def asset_graph():
    defs = dg.Definitions(
        assets=[*dbt_credit_assets],
        resources={"dbt": dbt_resource(), "warehouse": DuckDBWarehouse()},
    )
    return defs.resolve_asset_graph()


def _upstream(asset_graph, key: dg.AssetKey) -> set[dg.AssetKey]:
    seen: set[dg.AssetKey] = set()
    todo = [key]
    while todo:
        for parent in asset_graph.get(todo.pop()).parent_keys:
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def test_the_dbt_assets_are_the_seed_views_and_the_marts_under_their_schemas():
    assert set(SEED_VIEWS) <= set(dbt_credit_models.keys)
    assert {k.path[0] for k in dbt_credit_models.keys} == {"credits"}
    assert set(dbt_mart_models.keys) | set(dbt_revenue_model.keys) == set(MARTS) | (
        BUILT_ON_THE_REPLAY
    )
    assert not BUILT_ON_THE_REPLAY & set(dbt_credit_models.keys)
    assert set(dbt_revenue_model.keys) == {dg.AssetKey(["marts", "revenue_attribution"])}
    for spec in [*dbt_credit_models.specs, *dbt_mart_models.specs, *dbt_revenue_model.specs]:
        expected = CREDITS_GROUP if spec.key.path[0] == "credits" else MARTS_GROUP
        assert spec.group_name == expected, spec.key
        assert spec.owners and spec.description and "dbt" in spec.kinds, spec.key


def test_every_upstream_outside_dbt_is_an_extraction_asset_or_the_reconciliations_replay(
    asset_graph,
):
    upstream = {dep for key in DBT_KEYS for dep in asset_graph.get(key).parent_keys} - DBT_KEYS
    assert upstream <= RAW_KEYS | {ROW_POOLS}
    # the replayed ledger is the reconciliation's (dbt source `replay`), not a replay of dbt's
    assert ROW_POOLS in asset_graph.get(REPLAYED_LEDGER).parent_keys
    assert not {k for k in dbt_credit_models.keys if ROW_POOLS in _upstream(asset_graph, k)}
    assert {
        RAW_CREDIT_HISTORIES,
        dg.AssetKey(["raw", "credit_histories__open"]),
        dg.AssetKey(["raw", "extraction_cutoff"]),
    } <= upstream


def test_the_ledger_flows_from_raw_through_credit_histories_into_every_mart(asset_graph):
    parents = asset_graph.get(CREDIT_HISTORIES).parent_keys
    assert {
        RAW_CREDIT_HISTORIES,
        dg.AssetKey(["raw", "credit_histories__open"]),
        dg.AssetKey(["raw", "extraction_cutoff"]),
    } <= parents
    for mart in MARTS:
        upstream = _upstream(asset_graph, mart)
        assert CREDIT_HISTORIES in upstream, mart
        assert RAW_CREDIT_HISTORIES in upstream, mart


def test_no_check_on_what_the_reconciliation_reads_blocks_and_marts_block_on_their_own_keys():
    credits_checks = list(dbt_credit_models.check_specs)
    mart_checks = [*dbt_mart_models.check_specs, *dbt_revenue_model.check_specs]
    assert credits_checks and mart_checks
    # the credits layer feeds the reconciliation: nothing there may block (contract section 4)
    assert not [c.name for c in credits_checks if c.blocking]
    assert "unique_credit_histories_credit_history_id" in {c.name for c in credits_checks}
    # a duplicated key a mart produced blocks
    blocking = {(c.asset_key, c.name) for c in mart_checks if c.blocking}
    for mart, check in (
        ("user_credit_daily", "unique_combination_user_credit_daily_user_id__balance_date"),
        ("user_credit_trends", "unique_user_credit_trends_user_id"),
        ("service_efficiency", "unique_combination_service_efficiency_service__usage_month"),
        ("plan_utilization", "unique_combination_plan_utilization_plan_tier__activity_month"),
        ("revenue_attribution", "unique_combination_revenue_attribution_revenue_month__service"),
        ("credit_cohorts", "unique_combination_credit_cohorts_signup_month__months_since_signup"),
    ):
        assert (dg.AssetKey(["marts", mart]), check) in blocking
    # a test that reads the ledger's own consistency only warns
    chain = next(
        c for c in mart_checks if c.name.startswith("accepted_values_user_credit_daily_chain")
    )
    assert not chain.blocking


def test_the_manifest_is_prepared_from_a_fresh_clone(tmp_path):
    clone = tmp_path / "dbt_transform"
    shutil.copytree(
        settings.DBT_PROJECT_DIR,
        clone,
        ignore=shutil.ignore_patterns("target", "logs", "dbt_packages", ".user.yml"),
    )
    project = DbtProject(project_dir=clone, profiles_dir=clone, target="duckdb")
    assert not project.manifest_path.exists()
    manifest = prepare_manifest_of(project)
    assert manifest.exists()
    assert manifest.stat().st_size > 0


def test_the_code_location_carries_the_extraction_assets_the_dbt_sources_point_at(monkeypatch):
    monkeypatch.setenv(settings.SOURCE_URL_VAR, settings.DEMO_SOURCE)  # no silent demo: chosen here
    monkeypatch.delenv(settings.WAREHOUSE_VAR, raising=False)
    definitions = importlib.import_module("credits_pipeline.definitions")
    graph = definitions.build_definitions().resolve_asset_graph()
    # the dbt steps are part of the code location: a missing one is the regression, not a skip
    assert set(graph.get_all_asset_keys()) >= DBT_KEYS
    upstream = {dep for key in DBT_KEYS for dep in graph.get(key).parent_keys} - DBT_KEYS
    materializable = {k for k in upstream if graph.get(k).is_materializable}
    assert materializable == upstream, sorted(k.to_user_string() for k in upstream - materializable)


# ------------------------------------------------------------------------------------------------
# Column lineage, from a build through Dagster

LINEAGE_KEY = column_lineage.LINEAGE_METADATA_KEY
LINEAGE_FAILURE = column_lineage.LINEAGE_FAILURE
# The models kept per user: a build from scratch and an incremental one compile to different SQL.
INCREMENTAL_MODELS = {"int_credit_replay", "user_credit_daily"}


@pytest.fixture(scope="module")
def lineage_runs(tmp_path_factory):
    """The dbt assets materialized twice on the fixture ledger, with the reconciliation whose
    replay the marts read, each time in a new, empty instance; both share the lineage kept on disk
    (an isolated store, empty at first). For each run (materializations by key, log lines), and
    for each the names of the models whose lineage it computed (not reused)."""
    from credits_pipeline_tests.test_dbt_models import (
        RECONCILIATION as RECONCILIATION_ASSETS,
    )
    from credits_pipeline_tests.test_dbt_models import write_fixture_warehouse

    prepare_manifest()
    tmp = tmp_path_factory.mktemp("lineage")
    warehouse = tmp / "warehouse.duckdb"
    write_fixture_warehouse(warehouse)
    computed: list[str] = []
    real_build = column_lineage._build_column_lineage_metadata

    def build_and_record(**kwargs):  # the real computation, recorded
        computed.append(kwargs["dbt_resource_props"]["name"])
        return real_build(**kwargs)

    runs, computed_by_run = [], []
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv(settings.WAREHOUSE_PATH_VAR, str(warehouse))
        monkeypatch.setenv("DAGSTER_HOME", str(tmp))
        monkeypatch.setattr(column_lineage, "_build_column_lineage_metadata", build_and_record)
        # an absolute directory: the store the steps derive from the project's target is this one
        monkeypatch.setattr(column_lineage, "LINEAGE_STORE_DIR", str(tmp / "lineage_store"))
        for _ in range(2):
            computed.clear()
            with dg.instance_for_test() as instance:
                result = dg.materialize(
                    [*dbt_credit_assets, RECONCILIATION_ASSETS],
                    resources={
                        "dbt": dbt_resource(),
                        "warehouse": DuckDBWarehouse(path=str(warehouse)),
                    },
                    instance=instance,
                    raise_on_error=False,
                )
                assert result.success
                logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
            materializations = {
                event.asset_key: event.materialization
                for event in result.get_asset_materialization_events()
            }
            runs.append((materializations, logs))
            computed_by_run.append(set(computed))
    return runs, computed_by_run


@pytest.fixture(scope="module")
def lineage_run(lineage_runs):
    """The first of the two materializations: (materializations by key, log lines)."""
    runs, _ = lineage_runs
    return runs[0]


def _column_deps(materialization, column: str) -> set[tuple[dg.AssetKey, str]]:
    lineage = materialization.metadata[LINEAGE_KEY].value
    return {(dep.asset_key, dep.column_name) for dep in lineage.deps_by_column[column]}


def test_every_dbt_model_resolves_its_column_lineage_without_an_error(lineage_run):
    materializations, logs = lineage_run
    # dagster-dbt logs a lineage failure, with its traceback, where it logs the dbt command
    assert any("Running dbt command" in line for line in logs)
    assert not [line for line in logs if LINEAGE_FAILURE in line]
    models = [
        key
        for key in DBT_KEYS
        if key.path[-1] not in ("event_catalog", "users_stored_balances")  # a seed, a snapshot
    ]
    assert len(models) >= 13
    for key in models:
        assert LINEAGE_KEY in materializations[key].metadata, key


def test_a_mart_column_traces_back_through_the_replay_to_the_raw_ledger(lineage_run):
    materializations, _ = lineage_run
    daily = materializations[dg.AssetKey(["marts", "user_credit_daily"])]
    replay = REPLAYED_LEDGER
    assert (replay, "balance_after") in _column_deps(daily, "closing_balance")
    # ... whose pools are the reconciliation's replay, and whose amounts are the ledger's
    replayed = materializations[REPLAYED_LEDGER]
    assert (ROW_POOLS, "subscription_after") in _column_deps(replayed, "subscription_after")
    assert (CREDIT_HISTORIES, "unsigned_amount") in _column_deps(replayed, "amount")
    assert (replay, "amount") in _column_deps(daily, "credits_spent")
    # the seed's view: its signed amount comes from both halves of the raw ledger
    histories = materializations[CREDIT_HISTORIES]
    assert {
        (RAW_CREDIT_HISTORIES, "amount"),
        (dg.AssetKey(["raw", "credit_histories__open"]), "amount"),
    } <= _column_deps(histories, "amount")
    # the history of stored balances reads the snapshot next to the daily mart
    history = materializations[dg.AssetKey(["marts", "user_stored_balance_history"])]
    assert (
        dg.AssetKey(["credits", "users_stored_balances"]),
        "extra_credits",
    ) in _column_deps(history, "stored_purchased_balance")
    assert (
        dg.AssetKey(["marts", "user_credit_daily"]),
        "closing_balance",
    ) in _column_deps(history, "ledger_balance")


def test_a_second_build_reuses_each_models_lineage_unless_its_compiled_sql_changed(lineage_runs):
    """The second build runs in a new, empty instance: what it reuses comes from the store."""
    runs, computed = lineage_runs
    (first, _), (second, logs) = runs
    assert not [line for line in logs if LINEAGE_FAILURE in line]
    assert computed[0] >= INCREMENTAL_MODELS | {"credit_histories", "credit_cohorts"}
    # only the models whose compiled SQL changed (from scratch, then incremental) computed it again
    assert computed[1] == INCREMENTAL_MODELS
    for key, materialization in first.items():
        if LINEAGE_KEY not in materialization.metadata:
            continue
        again = second[key].metadata
        assert again[LINEAGE_KEY] == materialization.metadata[LINEAGE_KEY], key
        digests = {again[column_lineage.LINEAGE_INPUTS_KEY]} | {
            materialization.metadata[column_lineage.LINEAGE_INPUTS_KEY]
        }
        assert len(digests) == (2 if key.path[-1] in INCREMENTAL_MODELS else 1), key


def test_a_stored_lineage_is_read_back_by_its_digest_and_an_unreadable_one_is_not(tmp_path):
    lineage = dg.TableColumnLineage(
        deps_by_column={"closing_balance": [dg.TableColumnDep(REPLAYED_LEDGER, "balance_after")]}
    )
    store = tmp_path / "store"
    assert column_lineage.stored_lineage(store, "d1") is None
    column_lineage.keep_lineage(store, "d1", {LINEAGE_KEY: lineage})
    assert column_lineage.stored_lineage(store, "d1")[LINEAGE_KEY].value == lineage
    assert column_lineage.stored_lineage(store, "d2") is None
    assert [p.name for p in store.iterdir()] == ["d1.json"]  # written whole, no partial left
    (store / "d3.json").write_text('{"__class__": "TableColumnLi')  # cut off mid-write
    assert column_lineage.stored_lineage(store, "d3") is None
    assert column_lineage.stored_lineage(None, "d1") is None


def test_stored_lineage_is_reused_only_for_the_same_inputs(tmp_path):
    key = dg.AssetKey(["marts", "user_credit_daily"])
    lineage = dg.TableColumnLineage(
        deps_by_column={"closing_balance": [dg.TableColumnDep(REPLAYED_LEDGER, "balance_after")]}
    )
    digest = column_lineage.lineage_inputs_digest("select 1 as a", {"a": "integer"}, {})
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert column_lineage._previous_lineage(instance, key, digest) is None
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                key,
                metadata={
                    LINEAGE_KEY: lineage,
                    column_lineage.LINEAGE_INPUTS_KEY: digest,
                },
            )
        )
        reused = column_lineage._previous_lineage(instance, key, digest)
        assert reused is not None and reused[LINEAGE_KEY].value == lineage
        assert column_lineage._previous_lineage(instance, key, "another digest") is None


def test_the_lineage_digest_changes_with_the_sql_and_either_side_of_the_columns():
    digest = column_lineage.lineage_inputs_digest
    parents = {'"w"."raw"."t"': {"a": "INTEGER", "b": "VARCHAR"}}
    base = digest("select a from raw.t", {"a": "INTEGER"}, parents)
    reordered = {'"w"."raw"."t"': {"b": "VARCHAR", "a": "INTEGER"}}
    assert digest("select a from raw.t", {"a": "INTEGER"}, reordered) == base
    assert digest("select b as a from raw.t", {"a": "INTEGER"}, parents) != base
    assert digest("select a from raw.t", {"a": "BIGINT"}, parents) != base
    widened = {'"w"."raw"."t"': {"a": "INTEGER", "b": "VARCHAR", "c": "DATE"}}
    assert digest("select a from raw.t", {"a": "INTEGER"}, widened) != base
    # the asset key a parent maps to is what the lineage points at
    keyed = digest("select a from raw.t", {"a": "INTEGER"}, parents, ["raw/t"])
    assert keyed != base
    assert digest("select a from raw.t", {"a": "INTEGER"}, parents, ["raw/t_renamed"]) != keyed


def test_the_compiled_sql_of_a_snapshot_is_read_where_dbt_writes_its_blocks(tmp_path):
    model = {"package_name": "p", "original_file_path": "models/m.sql", "resource_type": "model"}
    snapshot = {
        "package_name": "p",
        "original_file_path": "snapshots/s.sql",
        "resource_type": "snapshot",
        "name": "users_stored_balances",
    }
    assert column_lineage.compiled_sql_path(tmp_path, model) == tmp_path / "compiled/p/models/m.sql"
    assert (
        column_lineage.compiled_sql_path(tmp_path, snapshot)
        == tmp_path / "compiled/p/snapshots/s.sql/users_stored_balances.sql"
    )
