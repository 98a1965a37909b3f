"""Column lineage of the dbt models: computed once per version of a model, then reused.

Why: dagster-dbt derives column lineage with sqlglot after every build. It parses and optimizes
the model's compiled SQL, then traces every column through it again, one parse per column. At
100,000 users that took about 20 s of each daily run (bench/end_to_end.py: 6 s after the credits
step, 13.5 s after the marts step), every day, for a graph that only changes when a model's SQL
or a relation's columns do. The lineage is a function of exactly those inputs: the compiled SQL,
the model's columns and its parents' columns. So each materialization records a digest of them
(`LINEAGE_INPUTS_KEY`) beside the lineage, and the next build of the same model takes the lineage
of its latest materialization when the digest is the same. Otherwise it is computed as dagster-dbt
computes it (its own function, so the result is the same either way).

The compiled SQL of an incremental model differs between a build from scratch and an incremental
one, so such a model computes its lineage at most twice, then reuses one of the two.

Because the digest names everything the lineage is computed from, a lineage computed once is also
kept on disk by its digest, beside dbt's partial parse in the project's target directory
(`LINEAGE_STORE_DIR`). A new Dagster instance — a new deployment, a worker started empty, every
test — then reuses it instead of computing it again (~4.4 s of every first run's dbt steps on
the demo: 0.6 s credits, 3.0 s marts, 0.75 s revenue). A file that cannot be read is computed
again; files are written whole (a temporary name, then a rename), so two runs never read half.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import dagster_dbt
import sqlglot
from dagster_dbt import DbtCliInvocation, DbtProject
from dagster_dbt.core.dbt_cli_event import EventHistoryMetadata, _build_column_lineage_metadata

LINEAGE_METADATA_KEY = "dagster/column_lineage"
# sha256 of what the lineage was computed from (lineage_inputs_digest)
LINEAGE_INPUTS_KEY = "column_lineage_inputs"
# The words dagster-dbt starts its own warning with; the tests look for both.
LINEAGE_FAILURE = "An error occurred while building column lineage"
# Under the dbt project's target directory: one `<digest>.json` per lineage computed.
LINEAGE_STORE_DIR = "column_lineage"


def lineage_inputs_digest(
    compiled_sql: str,
    columns: Mapping[str, str],
    parents: Mapping[str, Mapping[str, str]],
    parent_keys: Sequence[str] = (),
) -> str:
    """A digest of everything a model's column lineage is computed from.

    Why each part: the SQL says which column feeds which; the model's own column types decide
    which of its columns get lineage; the parents' columns resolve a `select *` or an unqualified
    column; the parents' asset keys are what the lineage points at (a renamed key must not keep
    the old one); the versions of dagster-dbt and sqlglot are the algorithm. The order of the
    mappings does not matter, the names and types do.
    """
    payload = json.dumps(
        {
            "sql": compiled_sql,
            "columns": dict(sorted(columns.items())),
            "parents": {name: dict(sorted(cols.items())) for name, cols in sorted(parents.items())},
            "parent_keys": sorted(parent_keys),
            "algorithm": [dagster_dbt.__version__, sqlglot.__version__],
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def compiled_sql_path(target_path: Path, props: Mapping[str, Any]) -> Path:
    """Where dbt wrote a node's compiled SQL, the file dagster-dbt's lineage reads: a snapshot's
    blocks go to a directory named after its file (dbt >= 1.12; 1.11 writes none for them)."""
    path = target_path / "compiled" / props["package_name"] / props["original_file_path"]
    return path / f"{props['name']}.sql" if props["resource_type"] == "snapshot" else path


def _columns(invocation: DbtCliInvocation, adapter: Any, props: dict[str, Any]):
    data = invocation._get_columns_from_dbt_resource_props(
        adapter=adapter, dbt_resource_props=props
    )
    return data.name, {column.name: column.data_type for column in data.columns}


def _previous_lineage(
    instance: dg.DagsterInstance, key: dg.AssetKey, digest: str
) -> dict[str, Any] | None:
    """The lineage of the latest materialization of `key`, if it was computed from `digest`."""
    entry = instance.get_latest_materialization_event(key)
    materialization = entry.asset_materialization if entry is not None else None
    if materialization is None:
        return None
    metadata = materialization.metadata
    stored = metadata.get(LINEAGE_INPUTS_KEY)
    if stored is None or getattr(stored, "value", stored) != digest:
        return None
    if LINEAGE_METADATA_KEY not in metadata:
        return None
    return {LINEAGE_METADATA_KEY: metadata[LINEAGE_METADATA_KEY]}


def lineage_store(project: DbtProject) -> Path:
    """The directory keeping computed lineages for a dbt project's target (one per engine)."""
    return Path(project.project_dir) / project.target_path / LINEAGE_STORE_DIR


def stored_lineage(store: Path | None, digest: str) -> dict[str, Any] | None:
    """The lineage kept on disk for `digest` (None: none kept, or not readable as one)."""
    if store is None:
        return None
    path = store / f"{digest}.json"
    with contextlib.suppress(Exception):  # missing, half-written by an older version, foreign
        lineage = dg.deserialize_value(path.read_text(), dg.TableColumnLineage)
        return {LINEAGE_METADATA_KEY: dg.MetadataValue.column_lineage(lineage)}
    return None


def keep_lineage(store: Path | None, digest: str, computed: Mapping[str, Any]) -> None:
    """Keep a computed lineage on disk under its digest, written whole; never fails the build."""
    value = computed.get(LINEAGE_METADATA_KEY)
    lineage = getattr(value, "column_lineage", value)
    if store is None or not isinstance(lineage, dg.TableColumnLineage):
        return
    with contextlib.suppress(OSError):
        store.mkdir(parents=True, exist_ok=True)
        partial = store / f"{digest}.json.{os.getpid()}.partial"
        partial.write_text(dg.serialize_value(lineage))
        os.replace(partial, store / f"{digest}.json")


def lineage_metadata(
    context: dg.AssetExecutionContext,
    invocation: DbtCliInvocation,
    event: dg.Output | dg.AssetMaterialization,
    store: Path | None = None,
) -> dict[str, Any]:
    """The column lineage of one built model (with its inputs' digest): reused from the instance's
    latest materialization or from `store` (a directory, see `LINEAGE_STORE_DIR`), or computed
    and kept there."""
    adapter = invocation.adapter
    unique_id = event.metadata.get("unique_id")
    target_path = invocation.target_path
    if adapter is None or unique_id is None or target_path is None:
        return {}
    props = invocation.manifest["nodes"].get(getattr(unique_id, "value", unique_id))
    if props is None or props["resource_type"] not in ("model", "snapshot"):
        return {}
    sql_path = compiled_sql_path(target_path, props)
    if not sql_path.is_file():  # a snapshot under dbt 1.11: no compiled SQL to read
        return {}
    key = (
        event.asset_key
        if isinstance(event, dg.AssetMaterialization)
        else context.asset_key_for_output(event.output_name)
    )
    try:
        with adapter.connection_named(f"column_lineage_{props['unique_id']}"):
            _, columns = _columns(invocation, adapter, props)
            parents: dict[str, dict[str, str]] = {}
            parent_keys: list[str] = []
            for parent_id in invocation.manifest["parent_map"].get(props["unique_id"], []):
                parent = invocation.manifest["nodes"].get(parent_id) or invocation.manifest[
                    "sources"
                ].get(parent_id)
                if parent is None:
                    continue
                name, parent_columns = _columns(invocation, adapter, parent)
                parents[name] = parent_columns
                parent_keys.append(
                    invocation.dagster_dbt_translator.get_asset_spec(
                        invocation.manifest, parent_id, invocation.project
                    ).key.to_user_string()
                )
        digest = lineage_inputs_digest(sql_path.read_text(), columns, parents, parent_keys)
        reused = _previous_lineage(context.instance, key, digest) or stored_lineage(store, digest)
        if reused is not None:
            return {**reused, LINEAGE_INPUTS_KEY: digest}
        computed = _build_column_lineage_metadata(
            event_history_metadata=EventHistoryMetadata(
                columns={name: {"data_type": kind} for name, kind in columns.items()},
                parents={
                    name: {column: {"data_type": kind} for column, kind in cols.items()}
                    for name, cols in parents.items()
                },
            ),
            dbt_resource_props=props,
            manifest=invocation.manifest,
            dagster_dbt_translator=invocation.dagster_dbt_translator,
            target_path=target_path,
            project=invocation.project,
        )
    except Exception as exc:  # lineage is a view on the graph: never fail a build for it
        context.log.warning(
            f"{LINEAGE_FAILURE} metadata for the dbt resource "
            f"`{props['original_file_path']}`; it is left out of this materialization: {exc!r}"
        )
        return {}
    keep_lineage(store, digest, computed)
    return {**computed, LINEAGE_INPUTS_KEY: digest}
