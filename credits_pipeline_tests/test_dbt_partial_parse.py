"""dbt's partial parse kept per warehouse profile, so a dbt step does not re-parse the project.

The real path (three dbt steps of one run, read from their dbt logs) is tested in
test_dbt_models.py; these pin the cache's key and hand-over on their own.
"""

from __future__ import annotations

from pathlib import Path

from credits_pipeline import settings
from credits_pipeline.transform import dbt_project
from credits_pipeline.transform.dbt_project import (
    PARTIAL_PARSE_FILE,
    keep_partial_parse,
    partial_parse_cache,
    seeded_target_path,
)
from credits_pipeline.warehouse import cost, memory
from credits_pipeline_tests.dbt_duckdb import PROJECT


def test_each_warehouse_and_memory_setting_keeps_its_own_partial_parse(monkeypatch, tmp_path):
    monkeypatch.setenv(settings.WAREHOUSE_PATH_VAR, str(tmp_path / "a.duckdb"))
    first = partial_parse_cache(PROJECT)
    assert partial_parse_cache(PROJECT) == first
    monkeypatch.setenv(cost.DBT_RUN_ID_VAR, "another-run")  # not a profile value: same cache
    assert partial_parse_cache(PROJECT) == first
    monkeypatch.setenv(settings.WAREHOUSE_PATH_VAR, str(tmp_path / "b.duckdb"))
    assert partial_parse_cache(PROJECT) != first
    monkeypatch.setenv(settings.WAREHOUSE_PATH_VAR, str(tmp_path / "a.duckdb"))
    monkeypatch.setattr(memory, "dbt_env", lambda: {memory.DBT_MEMORY_LIMIT_VAR: "1GiB", "x": "y"})
    assert partial_parse_cache(PROJECT) != first


def test_a_kept_partial_parse_seeds_the_next_steps_target_and_nothing_is_seeded_before(
    monkeypatch, tmp_path
):
    project_dir = tmp_path / "project"
    project_dir.mkdir()
    project = type(
        "Project", (), {"project_dir": project_dir, "target_path": Path("target"), "target": "t"}
    )()
    monkeypatch.setenv(settings.WAREHOUSE_PATH_VAR, str(tmp_path / "w.duckdb"))
    first = seeded_target_path("credits-abc", project)  # type: ignore[arg-type]
    assert first.is_dir() and not (first / PARTIAL_PARSE_FILE).exists()
    keep_partial_parse(first, project)  # type: ignore[arg-type]  # dbt wrote none: nothing kept
    assert not partial_parse_cache(project).exists()  # type: ignore[arg-type]
    (first / PARTIAL_PARSE_FILE).write_bytes(b"parsed once")
    keep_partial_parse(first, project)  # type: ignore[arg-type]
    second = seeded_target_path("marts-abc", project)  # type: ignore[arg-type]
    assert second != first
    assert (second / PARTIAL_PARSE_FILE).read_bytes() == b"parsed once"
    assert not list(partial_parse_cache(project).parent.glob("*.partial"))  # type: ignore[arg-type]
    assert dbt_project.PARSE_CACHE_DIR in partial_parse_cache(project).parts  # type: ignore[arg-type]
