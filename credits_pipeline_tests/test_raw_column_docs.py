"""The raw tables' columns carry their business meaning in Dagster, written once, in dbt's YAML.

Every column the extraction copies has a real description in the `raw` source of
`dbt_transform/models/staging/_sources.yml`; the raw assets of the real code location publish
exactly those descriptions (with the warehouse type and the contract's nullability) in their
`dagster/column_schema`, on the definition and on every materialization, and no Python file
repeats the text.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml

from credits_pipeline.extract.column_docs import SOURCES_YAML, raw_column_descriptions
from credits_pipeline.names import OPEN_LEDGER_TABLE, raw_key
from credits_pipeline.source.tables import CREDIT_HISTORIES, TABLES
from credits_pipeline.warehouse.raw_tables import DUCKDB_TYPES, PARTITION_COLUMN
from credits_pipeline_tests.harness import code_location_definitions, run_extraction, write_source

PACKAGE = Path(__file__).resolve().parents[1] / "credits_pipeline"
COLUMN_SCHEMA = "dagster/column_schema"
MIN_DESCRIPTION_CHARS = 20  # a few words at least: "BIGINT" or "id" says nothing


def _yaml_descriptions() -> dict[str, dict[str, str]]:
    """The YAML read here on its own (not through the module under test)."""
    [source] = [
        s for s in yaml.safe_load(SOURCES_YAML.read_text())["sources"] if s["name"] == "raw"
    ]
    return {
        t["name"]: {c["name"]: " ".join(c["description"].split()) for c in t.get("columns", [])}
        for t in source["tables"]
    }


def _expected_columns() -> dict[str, list[tuple[str, str, bool]]]:
    """raw relation -> [(column, type, nullable)] as the extraction writes it."""
    expected = {
        t.name: [(c.name, DUCKDB_TYPES[c.kind], c.nullable) for c in t.extracted_columns]
        for t in TABLES
    }
    ledger = [*expected[CREDIT_HISTORIES.name], (PARTITION_COLUMN, "DATE", True)]
    expected[CREDIT_HISTORIES.name] = ledger
    expected[OPEN_LEDGER_TABLE] = ledger
    return expected


def test_every_extracted_column_has_a_real_description_in_the_sources_yaml():
    docs = _yaml_descriptions()
    for relation, columns in _expected_columns().items():
        for name, type_, _nullable in columns:
            text = docs.get(relation, {}).get(name, "")
            assert len(text) >= MIN_DESCRIPTION_CHARS, f"raw.{relation}.{name}: {text!r}"
            assert text.lower() not in {type_.lower(), f"{type_.lower()}, not null"}, relation
    # personal data is never extracted, so it is never described as a raw column either
    assert not {"name", "email"} & set(docs["users"])


def test_the_code_locations_raw_assets_publish_the_yaml_descriptions_types_and_nullability(
    monkeypatch,
):
    graph = code_location_definitions(monkeypatch).resolve_asset_graph()
    docs = _yaml_descriptions()
    for relation, columns in _expected_columns().items():
        schema = graph.get(raw_key(relation)).metadata[COLUMN_SCHEMA]
        published = [
            (c.name, c.type, c.constraints.nullable, c.description) for c in schema.columns
        ]
        assert published == [
            (name, type_, nullable, docs[relation][name]) for name, type_, nullable in columns
        ], relation


def test_a_materialization_publishes_the_same_column_schema_as_the_definition(
    tmp_path, monkeypatch
):
    url = f"sqlite:///{tmp_path / 'syllaby_v2.sqlite'}"
    write_source(url)
    graph = code_location_definitions(monkeypatch).resolve_asset_graph()
    with dg.instance_for_test() as instance:
        result = run_extraction(instance, url, str(tmp_path / "warehouse.duckdb"))
        assert result.success
        for relation in ("users", CREDIT_HISTORIES.name, OPEN_LEDGER_TABLE, "videos"):
            key = raw_key(relation)
            [materialization] = instance.fetch_materializations(key, limit=1).records
            stored = materialization.asset_materialization.metadata[COLUMN_SCHEMA].schema
            assert stored == graph.get(key).metadata[COLUMN_SCHEMA], relation


def test_the_descriptions_are_written_once_in_the_yaml_and_nowhere_in_python():
    assert raw_column_descriptions() == _yaml_descriptions()
    python = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    folded = " ".join(python.split())
    long_texts = {text for columns in _yaml_descriptions().values() for text in columns.values()}
    repeated = [text for text in long_texts if len(text) > 40 and text in folded]
    assert repeated == [], f"repeated in Python instead of read from {SOURCES_YAML.name}"
