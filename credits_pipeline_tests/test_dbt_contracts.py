"""Enforced dbt contracts on what other teams read: every mart and the seed's two staging models.

With `contract: {enforced: true}` dbt checks a model's select against the columns and data types
declared in its YAML before it writes anything, so a mart that drops, renames or retypes a column
fails the build instead of changing under a dashboard (the builds of test_dbt_unit_tests.py and
test_dbt_models.py run them). The guard is only as wide as the configuration: a new mart outside
`models/marts`, an override switching the contract off, or a column declared without a type would
quietly narrow it. The manifest (`dbt parse`, no warehouse) shows all three.
"""

from __future__ import annotations

import json
from typing import Any

from credits_pipeline_tests.dbt_duckdb import prepare_manifest

PROJECT = "credits_transform"
MARTS_PATH = "models/marts/"
SEED_MODELS = ("credit_events", "credit_histories")


def contracted_models(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Model name -> manifest node, for every mart and the seed's two models."""
    return {
        node["name"]: node
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model"
        and node["package_name"] == PROJECT
        and (node["original_file_path"].startswith(MARTS_PATH) or node["name"] in SEED_MODELS)
    }


def contract_gaps(manifest: dict[str, Any]) -> list[str]:
    """What leaves a model that should be contracted without a full contract, one line each."""
    models = contracted_models(manifest)
    gaps = [f"{name}: not in the manifest" for name in SEED_MODELS if name not in models]
    for name, node in sorted(models.items()):
        if not node["config"].get("contract", {}).get("enforced"):
            gaps.append(f"{name}: contract not enforced")
        if not node["columns"]:
            gaps.append(f"{name}: no column declared")
        gaps.extend(
            f"{name}.{column}: no data_type"
            for column, spec in node["columns"].items()
            if not spec.get("data_type")
        )
    return gaps


def test_every_mart_and_both_seed_models_enforce_a_contract_typing_every_column():
    manifest = json.loads(prepare_manifest().read_text())
    models = contracted_models(manifest)
    assert {"usage_risk_signals", "user_credit_daily", *SEED_MODELS} <= set(models)
    assert contract_gaps(manifest) == []


def _model(name: str, path: str, enforced: bool, **columns: str | None) -> dict[str, Any]:
    return {
        "resource_type": "model",
        "package_name": PROJECT,
        "name": name,
        "original_file_path": path,
        "config": {"contract": {"enforced": enforced}},
        "columns": {c: {"name": c, "data_type": t} for c, t in columns.items()},
    }


def test_a_mart_without_its_contract_or_a_column_without_a_type_is_reported():
    manifest = {
        "nodes": {
            "model.a": _model("credit_events", "models/staging/credit_events.sql", True, id="int"),
            "model.b": _model("plan_mart", "models/marts/plan_mart.sql", False, tier="varchar"),
            "model.c": _model("cost_mart", "models/marts/cost_mart.sql", True, cost=None),
            "model.d": _model("int_replay", "models/intermediate/int_replay.sql", False, x=None),
        }
    }
    assert contract_gaps(manifest) == [
        "credit_histories: not in the manifest",
        "cost_mart.cost: no data_type",
        "plan_mart: contract not enforced",
    ]
