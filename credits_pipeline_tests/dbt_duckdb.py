"""The dbt project and its three steps on DuckDB, as the tests use them.

In the product `definitions.py` chooses the engine and hands its kind to `dbt_project_for`; the
tests that run dbt do so on a DuckDB warehouse, so they share this one set of definitions (built,
with its manifest prepared, when first imported, as the code location does).
"""

from dagster_dbt import DbtCliResource

from credits_pipeline import transform

PROJECT = transform.dbt_project_for("duckdb")
STEPS = transform.build_dbt_assets(PROJECT)
dbt_credit_assets = list(STEPS)
dbt_credit_models, dbt_mart_models, dbt_revenue_model = STEPS


def dbt_resource() -> DbtCliResource:
    """The dbt CLI resource on the DuckDB profile target."""
    return transform.dbt_resource(PROJECT)


def prepare_manifest():
    """The DuckDB project's manifest, rebuilt when stale (for the warehouse path now set)."""
    return transform.prepare_manifest(PROJECT)
