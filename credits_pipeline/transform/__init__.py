"""The dbt transformation as Dagster assets: the seed's credit models and the analytics marts.

dbt owns the SQL (`dbt_transform/`); this package only tells Dagster where the project is, how its
nodes map onto the pipeline's asset keys and groups, and how to run it against the warehouse.
"""

from credits_pipeline.transform.assets import DbtSteps, build_dbt_assets, dbt_resource
from credits_pipeline.transform.dbt_project import dbt_project_for, prepare_manifest
from credits_pipeline.transform.translator import (
    CREDITS_GROUP,
    MARTS_GROUP,
    RAW_KEY_PREFIX,
    CreditsDbtTranslator,
)

__all__ = [
    "CREDITS_GROUP",
    "MARTS_GROUP",
    "RAW_KEY_PREFIX",
    "CreditsDbtTranslator",
    "DbtSteps",
    "build_dbt_assets",
    "dbt_project_for",
    "dbt_resource",
    "prepare_manifest",
]
