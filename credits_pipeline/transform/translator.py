"""How dbt's nodes become the pipeline's Dagster assets.

The dbt project does not know the pipeline's asset keys; this translator does. A dbt source
`raw.<table>` is the asset the extraction writes, `raw/<table>`, so lineage runs unbroken from the
operational tables through extraction into dbt (and `reconciliation.<table>`, declared for the
project's exposures, is the reconciliation's `marts/<table>`). Models and the snapshot are keyed
by the schema they land in (`credits/<name>` for the seed's models, `marts/<name>` for marts) and
grouped the same way, with owners, kinds and a description that is the model's own YAML
description rather than its SQL.
dbt tests become asset checks; their severity (`error` blocks, `warn` does not) is set in the dbt
YAML, where each test is declared. Every check gets a description a person can read in the UI: the
test's own `description` from the YAML, else one written from what the test checks ("`x.y` is one
of 0"), with its severity; a dbt test that repeats a ledger rule says so and links the rule's
runbook section, so a failing pair reads as one problem. Check *names* stay dbt's (the run maps
test results to checks by name): short names are given in the YAML (`name:` on the test).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings

from credits_pipeline import names, settings
from credits_pipeline.ledger import rules_catalog as rc
from credits_pipeline.names import credits_key, marts_key
from credits_pipeline.runbook import runbook_link

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
# The dbt source that declares the reconciliation's reports (written in Python, read by the
# project's exposures): its tables are the reconciliation assets, `marts/<table>`.
RECONCILIATION_SOURCE = "reconciliation"
# The dbt source of the replay's pools around every row (credits.ledger_row_pools), written by the
# same reconciliation run: its asset is the reconciliation's third, `credits/ledger_row_pools`.
REPLAY_SOURCE = rc.ROW_POOLS_SOURCE

_GROUP_BY_SCHEMA = {CREDITS_SCHEMA: CREDITS_GROUP, MARTS_SCHEMA: MARTS_GROUP}

# dbt tests that check what a ledger rule already reports row by row: (model, column) -> rule.
LEDGER_RULE_REPEATED_BY_TEST = {
    ("user_credit_daily", "chain_adjustment"): rc.CHAIN_BREAK,
    ("credit_histories", "user_id"): rc.ORPHAN_USER,
}
SEVERITY_NOTE = {
    "error": "ERROR: a failure blocks the assets downstream",
    "warn": "WARN: reported, never blocks",
}


def _kwarg(kwargs: Mapping[str, Any], name: str) -> Any:
    return kwargs.get(name, (kwargs.get("arguments") or {}).get(name))


def generated_test_description(test_props: Mapping[str, Any]) -> str:
    """What a generic dbt test checks, in one sentence, from its name and arguments."""
    metadata = test_props.get("test_metadata") or {}
    kind = metadata.get("name") or "test"
    kwargs = metadata.get("kwargs") or {}
    model = str(test_props.get("attached_node") or "").rsplit(".", 1)[-1] or "the model"
    column = test_props.get("column_name") or _kwarg(kwargs, "column_name")
    target = f"`{model}.{column}`" if column else f"`{model}`"
    if kind == "not_null":
        return f"{target} is never NULL."
    if kind == "unique":
        return f"{target} has no duplicate value."
    if kind == "accepted_values":
        values = ", ".join(str(v) for v in _kwarg(kwargs, "values") or [])
        return f"{target} is one of: {values}."
    if kind == "relationships":
        to = str(_kwarg(kwargs, "to") or "").replace("ref(", "").replace("source(", "")
        to = to.replace("'", "").replace(")", "").replace(", ", ".")
        return f"Every {target} exists in `{to}.{_kwarg(kwargs, 'field')}`."
    if kind == "unique_combination":
        columns = ", ".join(_kwarg(kwargs, "columns") or [])
        return f"No two rows of `{model}` share ({columns})."
    return f"dbt test `{kind}` on {target}."


def dbt_test_description(test_props: Mapping[str, Any]) -> str:
    """The check's description: the YAML's own, or a generated one; severity; a repeated rule."""
    config = test_props.get("config") or {}
    own = (test_props.get("description") or "").strip()
    own = own or ((config.get("meta") or test_props.get("meta") or {}).get("description") or "")
    text = " ".join(own.split()) or generated_test_description(test_props)
    model = str(test_props.get("attached_node") or "").rsplit(".", 1)[-1]
    rule = LEDGER_RULE_REPEATED_BY_TEST.get((model, str(test_props.get("column_name") or "")))
    if rule:
        text += (
            f" Repeats the ledger rule `{rule}`, which lists the rows and their credits: "
            f"{runbook_link(rule)}"
        )
    severity = str(config.get("severity") or "error").lower()
    return f"{text} ({SEVERITY_NOTE.get(severity, severity)}.)"


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
            if dbt_resource_props.get("source_name") == RECONCILIATION_SOURCE:
                return marts_key(dbt_resource_props["name"])
            if dbt_resource_props.get("source_name") == REPLAY_SOURCE:
                return credits_key(rc.ROW_POOLS_TABLE)
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

    def get_asset_check_spec(
        self,
        asset_spec: dg.AssetSpec,
        manifest: Mapping[str, Any],
        unique_id: str,
        project: Any,
    ) -> dg.AssetCheckSpec | None:
        spec = super().get_asset_check_spec(asset_spec, manifest, unique_id, project)
        if spec is None:
            return None
        return dg.AssetCheckSpec(
            name=spec.name,
            asset=spec.asset_key,
            description=dbt_test_description(manifest["nodes"][unique_id]),
            additional_deps=[dep.asset_key for dep in spec.additional_deps],
            metadata=spec.metadata,
            blocking=spec.blocking,
        )

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
        if props["resource_type"] in ("seed", "snapshot"):
            kinds.add(props["resource_type"])
        elif props.get("config", {}).get("materialized") == "view":
            kinds.add("view")
        elif props.get("config", {}).get("materialized") == "table":
            kinds.add("table")
        spec = spec.replace_attributes(kinds=kinds)
        if spec.key == REVENUE_KEY and settings.block_revenue_on_error():
            # With the setting on, an ERROR ledger check (blocking then) holds the revenue mart
            # back:
            # Dagster only blocks what is downstream of the checked asset.
            spec = spec.merge_attributes(deps=[marts_key(name) for name in RECONCILIATION_MODELS])
        return spec
