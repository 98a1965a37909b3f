"""The code location: assembles the assets, checks, jobs, schedules and sensors. Nothing else.

Each room of the pipeline exposes its Dagster objects; this module only puts them together with
the resources they need, built from the environment (`dg.EnvVar`) so that no credential is ever
written in code or shown in the UI.
"""

from __future__ import annotations

import warnings

import dagster as dg

from credits_pipeline import settings
from credits_pipeline.alerts import alert_sensor, run_failure_alert_sensor
from credits_pipeline.analytics import analytics_assets, usage_risk_checks
from credits_pipeline.extract.assets import LEDGER_KEY, extraction_assets
from credits_pipeline.extract.lag import (
    lag_check_job,
    lag_schedule,
    ledger_lag_check,
    source_staleness_check,
)
from credits_pipeline.extract.observe import observe_job, observe_schedule, source_observation
from credits_pipeline.ledger import (
    blocking_from_settings,
    build_reconciliation_assets,
    reconciliation_gates,
)
from credits_pipeline.names import MARTS_PREFIX, WAREHOUSE_KIND
from credits_pipeline.run_tag_sensors import check_tags_on_failure, check_tags_on_success
from credits_pipeline.schedules import daily_freshness_policy, daily_job, daily_schedule
from credits_pipeline.source.resource import SourceDatabase
from credits_pipeline.transform import (
    build_dbt_assets,
    dbt_project_for,
    dbt_resource,
    prepare_manifest,
)
from credits_pipeline.transform.assets import DBT_RESOURCE_KEY
from credits_pipeline.warehouse.choice import choose_warehouse
from credits_pipeline.warehouse.interface import Warehouse

KIND_TAG_PREFIX = "dagster/kind/"  # how Dagster stores an asset's kinds among its tags


def build_resources(warehouse: Warehouse | None = None) -> dict:
    """Resources from the environment; secrets stay EnvVars so Dagster never displays them.

    The environment is checked first, as a whole: a missing `CREDITS_SOURCE_URL` (there is no
    silent demo; `demo` must be chosen) or any malformed variable fails the code location's load
    with one line per problem instead of a traceback from deep inside a resource.
    """
    settings.raise_for_configuration()
    source = SourceDatabase(url=dg.EnvVar(settings.SOURCE_URL_VAR))
    warehouse = warehouse if warehouse is not None else choose_warehouse()
    return {
        "source": source,
        "warehouse": warehouse,
        # dbt runs on the profile target of the same engine (transform/dbt_project.py)
        DBT_RESOURCE_KEY: dbt_resource(dbt_project_for(warehouse.kind)),
    }


def prepare_for_run() -> None:
    """What a run needs before Dagster starts it: an up-to-date dbt manifest (see transform/)."""
    prepare_manifest(dbt_project_for(choose_warehouse().kind))


def _with_freshness(assets: list) -> list:
    """The raw ledger and every mart must be refreshed daily: attach the freshness policy."""
    policy = daily_freshness_policy()

    def needs_policy(key: dg.AssetKey) -> bool:
        return key == LEDGER_KEY or key.path[0] == MARTS_PREFIX

    def attach(spec: dg.AssetSpec) -> dg.AssetSpec:
        return dg.apply_freshness_policy(spec, policy) if needs_policy(spec.key) else spec

    return [
        a.map_asset_specs(attach)
        if isinstance(a, dg.AssetsDefinition) and any(map(needs_policy, a.keys))
        else a
        for a in assets
    ]


def _with_warehouse_kind(assets: list, kind: str) -> list:
    """The rooms tag what they store in the warehouse with `WAREHOUSE_KIND`; the UI shows the
    engine chosen here instead (duckdb or bigquery)."""
    placeholder = f"{KIND_TAG_PREFIX}{WAREHOUSE_KIND}"

    def swap(spec: dg.AssetSpec) -> dg.AssetSpec:
        if WAREHOUSE_KIND not in spec.kinds:
            return spec
        tags = {k: v for k, v in spec.tags.items() if k != placeholder}
        return spec.replace_attributes(kinds=(spec.kinds - {WAREHOUSE_KIND}) | {kind}, tags=tags)

    return [
        a.map_asset_specs(swap)
        if isinstance(a, dg.AssetsDefinition) and any(WAREHOUSE_KIND in s.kinds for s in a.specs)
        else a
        for a in assets
    ]


def build_definitions() -> dg.Definitions:
    # Code references: each asset links to the function that computes it (dbt models also to their
    # SQL file, see transform/translator.py; source tables to their contract entry). Not
    # `dg.link_code_references_to_git`: it only builds GitHub/GitLab URLs, and this repository has
    # no such remote, so the UI keeps the local file links.
    warehouse = choose_warehouse()  # the one choice of engine; dbt's target follows it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # code references are beta in 1.13
        computed = dg.with_source_code_references(
            [
                *extraction_assets,
                *build_dbt_assets(dbt_project_for(warehouse.kind)),
                build_reconciliation_assets(blocking=blocking_from_settings()),
                *analytics_assets,
            ]
        )
    assets = _with_warehouse_kind(_with_freshness(list(computed)), warehouse.kind)
    return dg.Definitions(
        assets=[source_observation, *assets],
        resources=build_resources(warehouse),
        asset_checks=[
            ledger_lag_check,
            source_staleness_check,
            usage_risk_checks,
            *reconciliation_gates(blocking_from_settings()),
        ],
        jobs=[daily_job, lag_check_job, observe_job],
        schedules=[daily_schedule, lag_schedule, observe_schedule],
        sensors=[
            alert_sensor,
            run_failure_alert_sensor,
            check_tags_on_success,
            check_tags_on_failure,
        ],
        executor=dg.in_process_executor,
    )


defs = build_definitions()
