"""The dbt transformation as Dagster assets: the seed's credit models and the analytics marts.

dbt owns the SQL (`dbt_transform/`); this package only tells Dagster where the project is, how its
nodes map onto the pipeline's asset keys and groups, and how to run it against the warehouse.
"""

from credits_pipeline.transform.assets import (
    dbt_credit_assets,
    dbt_credit_models,
    dbt_mart_models,
    dbt_resource,
    dbt_revenue_model,
)
from credits_pipeline.transform.dbt_project import DBT_PROJECT, prepare_manifest
from credits_pipeline.transform.translator import (
    CREDITS_GROUP,
    MARTS_GROUP,
    RAW_KEY_PREFIX,
    CreditsDbtTranslator,
)

__all__ = [
    "CREDITS_GROUP",
    "DBT_PROJECT",
    "MARTS_GROUP",
    "RAW_KEY_PREFIX",
    "CreditsDbtTranslator",
    "dbt_credit_assets",
    "dbt_credit_models",
    "dbt_mart_models",
    "dbt_resource",
    "dbt_revenue_model",
    "prepare_manifest",
]
