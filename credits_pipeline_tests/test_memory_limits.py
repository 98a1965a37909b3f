"""Bounded memory: the sizing rule, the overrides, and a whole run under a small DuckDB limit."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from credits_pipeline import settings
from credits_pipeline.warehouse import memory
from credits_pipeline.warehouse.duckdb_warehouse import DuckDBWarehouse

GIB = 1024**3


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (24 * GIB, "1024MiB"),  # an ordinary worker: the per-process ceiling, not 6 GiB
        (2 * GIB, "512MiB"),  # a small container: a quarter
        (512 * 1024**2, "256MiB"),  # a tiny one: the floor, not 128 MiB
        (None, "256MiB"),  # memory unknown: the floor
        (0, "256MiB"),
    ],
)
def test_the_default_limit_is_a_quarter_of_ram_between_a_floor_and_a_ceiling(total, expected):
    assert memory.memory_limit_for(total) == expected


def test_the_default_limit_is_one_duckdb_accepts_and_reads_back_as_the_same_amount():
    con = duckdb.connect()
    con.execute("set memory_limit = ?", [memory.memory_limit_for(2 * GIB)])
    assert con.execute("select current_setting('memory_limit')").fetchone()[0] == "512.0 MiB"


def test_a_statement_beyond_the_limit_fails_naming_the_limit_and_the_variable_to_raise(
    monkeypatch, tmp_path
):
    """`string_agg` cannot spill: under 32 MB this aggregate cannot complete. The step's failure
    says which limit was in force and which variable raises it, instead of DuckDB's advice to
    `SET memory_limit` (which the pipeline would override at the next connection)."""
    monkeypatch.setenv(settings.DUCKDB_MEMORY_LIMIT_VAR, "32MB")
    warehouse = DuckDBWarehouse(path=str(tmp_path / "wh.duckdb"))
    with pytest.raises(dg.Failure) as failure, warehouse.connect() as con:
        con.execute(
            "select length(string_agg(repeat('x', 1000), ',')) from range(200000)"
        ).fetchall()
    description = failure.value.description or ""
    assert description.startswith("DuckDB ran out of memory under its limit of 32MB")
    assert settings.DUCKDB_MEMORY_LIMIT_VAR in description
    assert "SET memory_limit" not in description
    assert failure.value.metadata[memory.MEMORY_LIMIT_METADATA].value == "32MB"


def test_this_machines_memory_is_found():
    total = memory.total_memory_bytes()
    assert total is not None and total > 256 * 1024**2


def test_the_spill_directory_sits_beside_the_warehouse_file():
    assert memory.temp_directory_for(Path("/data/wh.duckdb")) == Path("/data/wh.duckdb.tmp")


def test_the_operator_overrides_limit_and_spill_directory(monkeypatch, tmp_path):
    monkeypatch.setenv(settings.DUCKDB_MEMORY_LIMIT_VAR, "300MB")
    monkeypatch.setenv(settings.DUCKDB_TEMP_DIRECTORY_VAR, str(tmp_path / "spill"))
    assert memory.duckdb_settings(tmp_path / "wh.duckdb") == {
        "memory_limit": "300MB",
        "temp_directory": str(tmp_path / "spill"),
    }


MIB = 1024**2


@pytest.mark.parametrize(
    ("resident", "expected"),
    [
        (None, 1024 * MIB),  # resident memory unknown: the machine-sized default
        (300 * MIB, 1024 * MIB),  # a fresh process: the budget leaves more than the default
        (518 * MIB, 826 * MIB),  # the reconciliation alone at 100,000 users: 1792 - 518 - 448
        (900 * MIB, 444 * MIB),  # the same step late in a full run
        (1500 * MIB, 256 * MIB),  # a process past its budget: the floor, never less
    ],
)
def test_a_connection_gets_what_the_process_budget_leaves_between_the_floor_and_the_default(
    resident, expected
):
    assert memory.limit_within_budget(1024 * MIB, resident) == expected


def test_the_resident_memory_is_read_from_the_process_status(tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmHWM:\t  900000 kB\nVmRSS:\t  524288 kB\n")
    assert memory.resident_bytes(status) == 512 * MIB
    assert memory.resident_bytes(tmp_path / "missing") is None
    here = memory.resident_bytes()  # this very process: it holds at least the interpreter
    assert here is not None and here > 10 * MIB


@pytest.mark.parametrize("resident", [400 * MIB, 1300 * MIB])
def test_every_pipeline_connection_runs_under_its_budgeted_limit_and_spills_beside_the_file(
    monkeypatch, tmp_path, resident
):
    """What the connection runs under is what the process budget leaves, read back from DuckDB,
    and the metadata says exactly that; dbt's subprocesses keep the machine-sized default."""
    monkeypatch.delenv(settings.DUCKDB_MEMORY_LIMIT_VAR, raising=False)
    monkeypatch.delenv(settings.DUCKDB_TEMP_DIRECTORY_VAR, raising=False)
    monkeypatch.setattr(memory, "resident_bytes", lambda: resident)
    default = memory.memory_limit_bytes_for(memory.total_memory_bytes())
    budgeted = memory.as_duckdb_size(memory.limit_within_budget(default, resident))
    warehouse = DuckDBWarehouse(path=str(tmp_path / "wh.duckdb"))
    for read_only in (False, True):
        with warehouse.connect(read_only=read_only) as con:
            limit, spill = con.execute(
                "select current_setting('memory_limit'), current_setting('temp_directory')"
            ).fetchone()
            meta = warehouse.usage_metadata(con)
        assert spill == str(tmp_path / "wh.duckdb.tmp")
        expected = duckdb.connect()
        expected.execute("set memory_limit = ?", [budgeted])
        assert limit == expected.execute("select current_setting('memory_limit')").fetchone()[0]
        assert meta[memory.MEMORY_LIMIT_METADATA].value == limit
    assert memory.duckdb_settings()["memory_limit"] == memory.memory_limit()


def test_a_temp_directory_that_is_a_file_is_a_configuration_problem(tmp_path):
    a_file = tmp_path / "not_a_dir"
    a_file.write_text("x")
    env = {settings.SOURCE_URL_VAR: "demo", settings.DUCKDB_TEMP_DIRECTORY_VAR: str(a_file)}
    problems = settings.configuration_problems(env)
    assert len(problems) == 1 and settings.DUCKDB_TEMP_DIRECTORY_VAR in problems[0]


def test_dbt_subprocesses_get_the_same_limit_and_spill_directory(monkeypatch, tmp_path):
    from credits_pipeline.transform.dbt_project import dbt_env

    monkeypatch.setenv(settings.DUCKDB_MEMORY_LIMIT_VAR, "300MB")
    monkeypatch.setenv(settings.WAREHOUSE_PATH_VAR, str(tmp_path / "wh.duckdb"))
    env = dbt_env()
    assert env[memory.DBT_MEMORY_LIMIT_VAR] == "300MB"
    assert env[memory.DBT_TEMP_DIRECTORY_VAR] == str(tmp_path / "wh.duckdb.tmp")


def test_a_full_run_under_a_256mb_duckdb_limit_completes_with_the_limit_in_force(tmp_path):
    """The whole materialization (extraction, dbt, reconciliation) under
    CREDITS_DUCKDB_MEMORY_LIMIT;
    the assets' metadata and dbt's own DuckDB session say the limit was in force."""
    from credits_pipeline.ledger.checks import RECONCILIATION_KEY
    from credits_pipeline.source.demo import generate

    source = tmp_path / "syllaby_v2.sqlite"
    generate(f"sqlite:///{source}", users=90, seed=11, months=6, anomalies=True)
    warehouse = tmp_path / "warehouse.duckdb"
    today = dt.datetime.now(dt.UTC).date()
    env = {
        **os.environ,
        settings.SOURCE_URL_VAR: f"sqlite:///{source}",
        settings.WAREHOUSE_PATH_VAR: str(warehouse),
        settings.LEDGER_START_DATE_VAR: (today - dt.timedelta(days=100)).isoformat(),
        settings.DUCKDB_MEMORY_LIMIT_VAR: "256MB",
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    env.pop(settings.DUCKDB_TEMP_DIRECTORY_VAR, None)
    run = subprocess.run(
        [sys.executable, "-m", "credits_pipeline.cli", "materialize", "--log-level", "WARNING"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        for key in (RECONCILIATION_KEY, dg.AssetKey(["raw", "credit_histories"])):
            event = instance.get_latest_materialization_event(key)
            assert event is not None, key
            meta = event.asset_materialization.metadata
            # 256 MB in DuckDB's words
            assert meta[memory.MEMORY_LIMIT_METADATA].value == "244.1 MiB"
            assert meta[memory.TEMP_DIRECTORY_METADATA].value == f"{warehouse}.tmp"
    con = duckdb.connect(str(warehouse), read_only=True)
    reconciled, users = con.execute(
        "select (select count(*) from marts.user_balance_reconciliation),"
        " (select count(*) from raw.users)"
    ).fetchone()
    con.close()
    assert users > 0 and reconciled == users  # a row per extracted user: the report was written

    # dbt's DuckDB, opened through the profile with the pipeline's environment, has the limit too
    from credits_pipeline.transform.dbt_project import dbt_env, dbt_executable

    dbt_run_env = {**env, **_with_env(env, dbt_env)}
    shown = subprocess.run(
        [
            dbt_executable(),
            "show",
            "--inline",
            # dbt show cuts long values: the spill directory is compared in SQL
            (
                "select current_setting('memory_limit') as limit_in_force, "
                f"cast(current_setting('temp_directory') = '{warehouse}.tmp' as varchar) as "
                "spill_ok"
            ),
            "--project-dir",
            str(settings.DBT_PROJECT_DIR),
            "--profiles-dir",
            str(settings.DBT_PROJECT_DIR),
            "--target",
            "duckdb",
            "--target-path",
            str(tmp_path / "dbt_target"),
            "--log-path",
            str(tmp_path / "dbt_logs"),
        ],
        env=dbt_run_env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert shown.returncode == 0, shown.stdout[-3000:]
    assert re.search(r"\|\s*244\.1 MiB\s*\|\s*true\s*\|", shown.stdout), shown.stdout


def _with_env(env: dict[str, str], function) -> dict[str, str]:
    """`function()` evaluated with `env` as this process's environment."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        return function()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_the_replays_spill_file_goes_to_the_duckdb_temp_directory_when_one_is_set(
    tmp_path, monkeypatch
):
    from credits_pipeline.ledger.reconcile import spill_root

    spill = tmp_path / "big_disk" / "spill"
    monkeypatch.setenv(settings.DUCKDB_TEMP_DIRECTORY_VAR, str(spill))
    assert spill_root() == spill
    assert spill.is_dir()  # created, so the replay can write its pools there
    monkeypatch.delenv(settings.DUCKDB_TEMP_DIRECTORY_VAR)
    assert spill_root() is None  # the system's temp directory
