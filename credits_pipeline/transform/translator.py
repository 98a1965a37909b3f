"""How dbt's nodes become the pipeline's Dagster assets.

The dbt project does not know the pipeline's asset keys; this translator does. A dbt source
`raw.<table>` is the asset the extraction writes, `raw/<table>`, so lineage runs unbroken from the
operational tables through extraction into dbt. Models are keyed by the schema they land in
(`credits/<name>` for the seed's models, `marts/<name>` for marts) and grouped the same way, with
owners, kinds and a description that is the model's own YAML description rather than its SQL.
dbt tests become asset checks; their severity (`error` blocks, `warn` does not) is set in the dbt
YAML, where each test is declared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings

from credits_pipeline import names, settings
from credits_pipeline.names import marts_key

RAW_KEY_PREFIX = names.RAW_PREFIX
CREDITS_GROUP = names.GROUP_CREDITS
MARTS_GROUP = names.GROUP_MARTS
# The warehouse schemas the dbt project writes (its `+schema` configs) are also the key prefixes.
CREDITS_SCHEMA = names.CREDITS_PREFIX
MARTS_SCHEMA = names.MARTS_PREFIX
ANALYTICS_OWNER = "team:analytics-engineering"
WAREHOUSE_KINDS = {"duckdb": "duckdb", "bigquery": "bigquery"}

REVENUE_KEY = marts_key("revenue_attribution")
RECONCILIATION_MODELS = ("user_balance_reconciliation", "ledger_anomalies")

_GROUP_BY_SCHEMA = {CREDITS_SCHEMA: CREDITS_GROUP, MARTS_SCHEMA: MARTS_GROUP}


def _custom_schema(dbt_resource_props: Mapping[str, Any]) -> str | None:
    """The schema a node is configured for (`+schema`), without any BigQuery dataset prefix."""
    return dbt_resource_props.get("config", {}).get("schema")


class CreditsDbtTranslator(DagsterDbtTranslator):
    """Maps the credits dbt project onto `raw/*`, `credits/*` and `marts/*`."""

    def __init__(self, settings: DagsterDbtTranslatorSettings | None = None):
        super().__init__(
            settings
            or DagsterDbtTranslatorSettings(enable_asset_checks=True, enable_code_references=True)
        )

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        resource_type = dbt_resource_props["resource_type"]
        if resource_type == "source":
            return names.raw_key(dbt_resource_props["name"])
        schema = _custom_schema(dbt_resource_props)
        if schema in _GROUP_BY_SCHEMA:
            return dg.AssetKey([schema, dbt_resource_props["name"]])
        return super().get_asset_key(dbt_resource_props)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if dbt_resource_props["resource_type"] == "source":
            # sources are the extraction assets; this project does not define them
            return None
        return _GROUP_BY_SCHEMA.get(_custom_schema(dbt_resource_props) or "")

    def get_owners(self, dbt_resource_props: Mapping[str, Any]) -> Sequence[str] | None:
        return [ANALYTICS_OWNER]

    def get_description(self, dbt_resource_props: Mapping[str, Any]) -> str:
        description = (dbt_resource_props.get("description") or "").strip()
        resource_type = dbt_resource_props["resource_type"]
        name = dbt_resource_props["name"]
        materialized = dbt_resource_props.get("config", {}).get("materialized")
        kind = f"dbt {materialized}" if materialized else f"dbt {resource_type}"
        return f"{description}\n\n({kind} `{name}`)" if description else f"{kind} `{name}`"

    def get_tags(self, dbt_resource_props: Mapping[str, Any]) -> Mapping[str, str]:
        layer = _GROUP_BY_SCHEMA.get(_custom_schema(dbt_resource_props) or "")
        return {"layer": layer} if layer else {}

    def get_asset_spec(
        self,
        manifest: Mapping[str, Any],
        unique_id: str,
        project: Any,
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        kinds = {"dbt"}  # Dagster allows three kinds: dbt, the warehouse, the materialization
        adapter = manifest.get("metadata", {}).get("adapter_type")
        if adapter in WAREHOUSE_KINDS:
            kinds.add(WAREHOUSE_KINDS[adapter])
        if props["resource_type"] == "seed":
            kinds.add("seed")
        elif props.get("config", {}).get("materialized") == "view":
            kinds.add("view")
        elif props.get("config", {}).get("materialized") == "table":
            kinds.add("table")
        spec = spec.replace_attributes(kinds=kinds)
        if spec.key == REVENUE_KEY and settings.block_revenue_on_error():
            # With the setting on, an ERROR ledger check (blocking then) holds the revenue mart back:
            # Dagster only blocks what is downstream of the checked asset.
            spec = spec.merge_attributes(deps=[marts_key(name) for name in RECONCILIATION_MODELS])
        return spec
