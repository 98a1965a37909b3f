"""The engine is chosen once, at the edge; the rooms talk to the warehouse interface.

`warehouse/choice.py` picks DuckDB or BigQuery for the two edges (the code location and the CLI);
`definitions.py` hands the chosen resource to every room and shows its engine as the kind of every
asset a room stores in the warehouse. These tests hold that shape: the assembled code location on
each engine, the rooms' imports read statically, and the one write the rooms share
(`session.replace_tables`) on real DuckDB. The BigQuery side of `replace_tables` runs on the
emulator through the reconciliation and churn tests (test_bigquery.py).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pytest

from credits_pipeline import settings
from credits_pipeline.names import WAREHOUSE_KIND, credits_key, marts_key, raw_key
from credits_pipeline.transform import dbt_project_for
from credits_pipeline.warehouse import session
from credits_pipeline.warehouse.bigquery_warehouse import BigQueryWarehouse
from credits_pipeline.warehouse.duckdb_warehouse import DuckDBWarehouse
from credits_pipeline_tests.harness import code_location_definitions
from credits_pipeline_tests.test_imports import PACKAGE_DIR, import_graph

# Modules that may name an engine: the warehouse room itself and the two edges that start a run.
ENGINE_AWARE = (
    "credits_pipeline.warehouse",
    "credits_pipeline.definitions",
    "credits_pipeline.cli",
)
# The engines' own modules, which only the modules above may import.
ENGINE_MODULES = {
    "credits_pipeline.warehouse.duckdb_warehouse",
    "credits_pipeline.warehouse.bigquery_warehouse",
    "credits_pipeline.warehouse.bigquery_raw_tables",
    "credits_pipeline.warehouse.bigquery_ledger_layout",
    "credits_pipeline.warehouse.choice",
}
# Third-party engine libraries: DuckDB may serve `validation/` and the read fingerprints
# (`extract/read_fingerprint.py`, sums over a batch in a private in-memory connection) as an
# in-process library on Arrow batches (it is not the warehouse there, whichever engine is);
# BigQuery's client belongs to the warehouse room alone.
ENGINE_LIBRARIES = {
    "duckdb": ("credits_pipeline.validation", "credits_pipeline.extract.read_fingerprint"),
    "google": (),
}
# Who may ask which engine runs: the one choice. dbt's project takes the chosen resource's kind
# (`dbt_project_for(kind)`, in definitions.py); the CLI asks the chosen resource where it is.
ASKS_FOR_THE_ENGINE = ("credits_pipeline.warehouse.choice",)

STORED_KEYS = (
    raw_key("credit_histories"),
    raw_key("users"),
    marts_key("user_balance_reconciliation"),
    marts_key("ledger_anomalies"),
    credits_key("credit_histories"),
)


def _kinds(defs: dg.Definitions) -> dict[dg.AssetKey, set[str]]:
    graph = defs.resolve_asset_graph()
    return {key: set(graph.get(key).kinds) for key in graph.get_all_asset_keys()}


def test_the_code_location_shows_duckdb_as_the_kind_of_every_asset_it_stores(monkeypatch):
    monkeypatch.delenv(settings.WAREHOUSE_VAR, raising=False)
    defs = code_location_definitions(monkeypatch)
    kinds = _kinds(defs)
    assert [k for k, v in kinds.items() if WAREHOUSE_KIND in v] == []
    assert all("duckdb" in kinds[key] for key in STORED_KEYS), {k: kinds[k] for k in STORED_KEYS}
    assert not any("bigquery" in v for v in kinds.values())
    assert isinstance(defs.resources["warehouse"], DuckDBWarehouse)


def test_the_code_location_on_bigquery_shows_bigquery_and_hands_every_room_its_resource(
    monkeypatch,
):
    monkeypatch.setenv(settings.WAREHOUSE_VAR, "bigquery")
    monkeypatch.setenv(settings.BIGQUERY_PROJECT_VAR, "interface-test")
    defs = code_location_definitions(monkeypatch)
    kinds = _kinds(defs)
    assert [k for k, v in kinds.items() if WAREHOUSE_KIND in v] == []
    # the rooms' own assets (raw copies, the reconciliation) carry the engine chosen at the edge
    for key in STORED_KEYS[:4]:
        assert "bigquery" in kinds[key] and "duckdb" not in kinds[key], (key, kinds[key])
    assert isinstance(defs.resources["warehouse"], BigQueryWarehouse)


@pytest.mark.parametrize("kind", ["duckdb", "bigquery"])
def test_dbt_runs_on_the_profile_target_of_the_engine_the_code_location_chose(monkeypatch, kind):
    monkeypatch.setenv(settings.WAREHOUSE_VAR, kind)
    monkeypatch.setenv(settings.BIGQUERY_PROJECT_VAR, "interface-test")
    defs = code_location_definitions(monkeypatch)
    warehouse, dbt = defs.resources["warehouse"], defs.resources["dbt"]
    assert warehouse.kind == kind and dbt.target == kind
    # the dbt steps were defined from the manifest parsed for that target, kept apart per engine
    manifest = dbt_project_for(kind).manifest_path
    assert manifest.parent.name == kind
    assert json.loads(manifest.read_text())["metadata"]["adapter_type"] == kind
    # where a run writes, as the CLI prints it: the engine's own description, no credential
    where = warehouse.process_config_and_initialize().describe()
    assert ("interface-test" in where) == (kind == "bigquery")
    assert where.endswith(".duckdb") == (kind == "duckdb")


def _imports_and_calls(path: Path) -> tuple[set[str], set[str]]:
    """Top-level names of every module `path` imports, and every attribute it calls."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported: set[str] = set()
    called: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            called.add(node.func.attr)
    return imported, called


def _module_files() -> dict[str, Path]:
    root = PACKAGE_DIR.parent
    return {
        ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
        for p in PACKAGE_DIR.rglob("*.py")
    }


def test_no_room_imports_an_engine_or_asks_which_engine_runs():
    graph = import_graph(PACKAGE_DIR)
    rooms = [m for m in graph if not m.startswith(ENGINE_AWARE)]
    assert rooms, "no modules read"
    engine_imports = {
        m: sorted(graph[m] & ENGINE_MODULES) for m in rooms if graph[m] & ENGINE_MODULES
    }
    assert engine_imports == {}

    library_imports = {}
    engine_questions = []
    for module, path in _module_files().items():
        imported, called = _imports_and_calls(path)
        for library, allowed in ENGINE_LIBRARIES.items():
            if module.startswith(ENGINE_AWARE) or module.startswith(allowed or ("-",)):
                continue
            if any(name == library or name.startswith(f"{library}.") for name in imported):
                library_imports.setdefault(module, []).append(library)
        if "warehouse_kind" in called and module not in ASKS_FOR_THE_ENGINE:
            engine_questions.append(module)
    assert library_imports == {}
    assert engine_questions == []


def test_the_warehouse_room_imports_no_room_that_comes_after_it_in_the_flow():
    graph = import_graph(PACKAGE_DIR)
    later = ("extract", "transform", "ledger", "analytics", "alerts", "definitions", "cli")
    upward = {
        module: sorted(t for t in targets if t.split(".")[1] in later)
        for module, targets in graph.items()
        if module.startswith("credits_pipeline.warehouse")
    }
    assert {m: t for m, t in upward.items() if t} == {}
    assert upward, "the warehouse room was not read"


def test_the_import_rules_see_an_engine_import_where_there_is_one():
    """The guard above is not blind: the warehouse room and the edges do import the engines."""
    graph = import_graph(PACKAGE_DIR)
    assert "credits_pipeline.warehouse.choice" in graph["credits_pipeline.definitions"]
    assert (
        "credits_pipeline.warehouse.bigquery_warehouse"
        in graph["credits_pipeline.warehouse.session"]
    )
    imported, called = _imports_and_calls(PACKAGE_DIR / "warehouse" / "choice.py")
    assert "warehouse_kind" in called and "dagster" in imported


def test_replacing_tables_on_duckdb_changes_them_together_at_the_callers_commit(tmp_path):
    warehouse = DuckDBWarehouse(path=str(tmp_path / "warehouse.duckdb"))
    old = pa.table({"user_id": [1, 2], "balance": [10, 20]})
    with warehouse.transaction() as con:
        session.replace_tables(con, {"marts.a": old, "marts.b": old})

    new = pa.table({"user_id": [3], "balance": [30]})
    with (
        pytest.raises(RuntimeError, match="after the first table"),
        warehouse.transaction() as con,
    ):
        session.replace_tables(con, {"marts.a": new})
        raise RuntimeError("a failure after the first table was replaced")
    with warehouse.connect(read_only=True) as con:
        # rolled back: the first table still holds the old rows
        assert con.execute("select user_id from marts.a order by 1").fetchall() == [(1,), (2,)]

    with warehouse.transaction() as con:
        con.execute("create temp table run_rows as select 4 as user_id, 40 as balance")
        # an Arrow table and a relation of the session, replaced in one call
        session.replace_tables(con, {"marts.a": new, "marts.b": "run_rows"})
    with warehouse.connect(read_only=True) as con:
        assert con.execute("select user_id, balance from marts.a").fetchall() == [(3, 30)]
        assert con.execute("select user_id, balance from marts.b").fetchall() == [(4, 40)]


def test_a_duckdb_warehouse_before_its_first_run_offers_no_session_and_creates_no_file(tmp_path):
    path = tmp_path / "later" / "warehouse.duckdb"
    warehouse = DuckDBWarehouse(path=str(path))
    with warehouse.session_if_exists() as con:
        assert con is None
    with warehouse.preview_session() as con:
        assert con is None
    assert not path.exists()
    with warehouse.connect() as con:
        con.execute("create table raw.t as select 1 as x")
    with warehouse.session_if_exists() as con:
        assert isinstance(con, duckdb.DuckDBPyConnection)
        assert con.execute("select x from raw.t").fetchall() == [(1,)]
