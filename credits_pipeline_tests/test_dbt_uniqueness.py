"""The uniqueness tests' DuckDB queries (dbt_transform/macros/uniqueness.sql) find exactly the
duplicates dbt's own queries find.

On DuckDB `unique` and `unique_combination` sort instead of grouping (the project's
`duckdb__test_unique` overrides dbt's, through dbt's own dispatch). Each query is compiled by dbt
from the project's macros, run on a table with duplicates, NULLs and unique rows, and compared
with the result of the engine-neutral query (dbt's `default__test_unique`, our
`default__unique_combination_rows`).
"""

from __future__ import annotations

import duckdb
import pytest

from credits_pipeline import settings
from credits_pipeline.transform.dbt_project import dbt_environment
from credits_pipeline_tests.dbt_duckdb import dbt_resource, prepare_manifest

PROBE = "raw.grain_probe"
PROBE_ROWS = [
    (1, "x"),
    (1, "x"),  # a duplicated pair, and 1 three times
    (1, "y"),
    (2, "x"),
    (3, None),
    (3, None),  # NULLs group together in a grain
    (None, "z"),
    (None, "z"),  # a NULL key is not a duplicate for `unique`, but is one for a grain
    (4, "w"),
]


# Every query the tests run, compiled by one dbt invocation (each invocation parses the project).
QUERIES = {
    "dispatched_unique": f"adapter.dispatch('test_unique', 'dbt')('{PROBE}', 'a')",
    "our_unique": f"duckdb__test_unique('{PROBE}', 'a')",
    "dbts_unique": f"dbt.default__test_unique('{PROBE}', 'a')",
    "dispatched_grain": f"unique_combination_rows('{PROBE}', ['a', 'b'])",
    "default_grain": f"default__unique_combination_rows('{PROBE}', ['a', 'b'])",
    "single_column_grain": f"unique_combination_rows('{PROBE}', ['a'])",
}
SPLIT = "-- next query:"


def compile_queries() -> dict[str, str]:
    """The SQL dbt compiles each of QUERIES to, with this project's macros."""
    inline = f"\n{SPLIT}\n".join("{{ " + call + " }}" for call in QUERIES.values())
    with dbt_environment():
        invocation = dbt_resource().cli(["compile", "--inline", inline], raise_on_error=False)
        events = list(invocation.stream_raw_events())
    assert invocation.is_successful(), invocation.get_error()
    nodes = [e.raw_event["data"] for e in events if e.raw_event["info"]["name"] == "CompiledNode"]
    assert len(nodes) == 1, [e.raw_event["info"]["name"] for e in events]
    parts = nodes[0]["compiled"].split(SPLIT)
    assert len(parts) == len(QUERIES)
    return dict(zip(QUERIES, (part.strip() for part in parts), strict=True))


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """(a warehouse holding the probe table, the compiled queries); dbt compiles against
    another file."""
    prepare_manifest()
    tmp = tmp_path_factory.mktemp("uniqueness")
    warehouse = tmp / "probe.duckdb"
    con = duckdb.connect(str(warehouse))
    con.execute("create schema raw")
    con.execute(f"create table {PROBE} (a integer, b varchar)")
    con.executemany(f"insert into {PROBE} values (?, ?)", PROBE_ROWS)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv(settings.WAREHOUSE_PATH_VAR, str(tmp / "compile.duckdb"))
        queries = compile_queries()
    yield con, queries
    con.close()


def rows(con, sql: str) -> list[tuple]:
    return sorted(con.execute(sql).fetchall(), key=repr)


def test_unique_on_duckdb_is_the_projects_sorting_query_and_finds_what_dbts_finds(probe):
    con, sql = probe
    # dbt's dispatch picks the project's query on DuckDB
    assert sql["dispatched_unique"] == sql["our_unique"]
    assert "lag(" in sql["our_unique"] and "lag(" not in sql["dbts_unique"]
    assert rows(con, sql["our_unique"]) == rows(con, sql["dbts_unique"]) == [(1, 3), (3, 2)]


def test_a_grain_on_duckdb_finds_the_duplicated_combinations_nulls_included(probe):
    con, sql = probe
    assert "lag(" in sql["dispatched_grain"] and "lag(" not in sql["default_grain"]
    assert (
        rows(con, sql["dispatched_grain"])
        == rows(con, sql["default_grain"])
        == [(1, "x", 2), (3, None, 2), (None, "z", 2)]
    )
    # one column of a grain: as `unique`, except that NULLs are one group
    assert rows(con, sql["single_column_grain"]) == [(1, 3), (3, 2), (None, 2)]
