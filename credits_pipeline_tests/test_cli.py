"""`credits-pipeline` as a person uses it: help, clear refusals, progress, and an honest summary.

Usage and configuration errors end in one line and exit code 2 before any work; `demo-data` never
wipes a populated database on any engine unless told to; a real materialization prints its
progress and a summary whose numbers are the warehouse's and the run's own; the run belongs to the
workspace's code location and carries its failed check counts; a run whose process was killed is
marked failed by the next start.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import sqlalchemy as sa

from credits_pipeline import settings
from credits_pipeline.cli import (
    EXIT_USAGE,
    PROG,
    _workspace_location,
    main,
    mark_interrupted_runs_failed,
)
from credits_pipeline.extract.observe import ROW_COUNT_METADATA
from credits_pipeline.names import source_key
from credits_pipeline.run_tags import FAILED_ERROR_CHECKS_TAG, FAILED_WARN_CHECKS_TAG
from credits_pipeline.source.tables import TABLES

PARTITION_DAYS = 30
SMALL_USERS = 60  # enough for --anomalies (one user per injected fault)
HISTORY_MONTHS = 6
KILL_DEADLINE_SECONDS = (
    600  # how long to wait for a run to start before giving up (not a timing assertion)
)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The process environment without any CREDITS_ variable of the caller, isolated in tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITS_")}
    env.update(
        {
            settings.DATA_DIR_VAR: str(tmp_path / "data"),
            settings.WAREHOUSE_PATH_VAR: str(tmp_path / "warehouse.duckdb"),
            settings.LEDGER_START_DATE_VAR: (
                dt.datetime.now(dt.UTC).date() - dt.timedelta(days=PARTITION_DAYS)
            ).isoformat(),
            "DAGSTER_HOME": str(tmp_path / "dagster_home"),
            "DAGSTER_DISABLE_TELEMETRY": "yes",
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        }
    )
    env.update(extra)
    return env


def _cli(tmp_path: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "credits_pipeline.cli", *args],
        env=_env(tmp_path, **extra_env),
        capture_output=True,
        text=True,
        timeout=900,
    )


def _demo_source(tmp_path: Path) -> str:
    from credits_pipeline.source.demo import generate

    url = f"sqlite:///{tmp_path / 'syllaby_demo.sqlite'}"
    generate(url, users=SMALL_USERS, seed=5, months=HISTORY_MONTHS, anomalies=True)
    return url


# -- help and version -----------------------------------------------------------------------------


def test_the_help_shows_every_command_option_default_and_examples(capsys):
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    assert "demo-data" in top and "materialize" in top and "--version" in top and "Examples" in top

    assert main(["demo-data", "--help"]) == 0
    demo = capsys.readouterr().out
    for option in (
        "--url",
        "--users",
        "--seed",
        "--end",
        "--months",
        "--anomalies",
        "--manifest",
        "--replace",
    ):
        assert option in demo, option
    assert "[default: 200]" in demo and "[default: 7]" in demo and "syllaby_demo" in demo

    assert main(["materialize", "--help"]) == 0
    mat = capsys.readouterr().out
    for option in ("--partition", "--verbose", "--log-level", "--full-refresh"):
        assert option in mat, option
    assert "[default: INFO]" in mat and "Examples" in mat


def test_version_prints_the_package_version(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"{PROG} {version('credits_pipeline')}"


# -- usage and configuration errors ---------------------------------------------------------------

BAD_ENVIRONMENTS = [
    ({settings.WAREHOUSE_VAR: "bogus"}, settings.WAREHOUSE_VAR),
    (
        {settings.SOURCE_URL_VAR: "mysql+pymysql://reader:hunter2@db:port/syllaby_v2"},
        settings.SOURCE_URL_VAR,
    ),
    ({settings.LEDGER_START_DATE_VAR: "2025-02-30"}, settings.LEDGER_START_DATE_VAR),
    ({settings.CUTOFF_AT_VAR: "yesterday"}, settings.CUTOFF_AT_VAR),
    ({settings.REPLAY_VAR: "fast"}, settings.REPLAY_VAR),
    ({settings.REPLAY_BATCH_ROWS_VAR: "0"}, settings.REPLAY_BATCH_ROWS_VAR),
    ({settings.DUCKDB_MEMORY_LIMIT_VAR: "lots"}, settings.DUCKDB_MEMORY_LIMIT_VAR),
    ({settings.DEMO_USERS_VAR: "many"}, settings.DEMO_USERS_VAR),
    ({settings.BLOCK_REVENUE_ON_ERROR_VAR: "maybe"}, settings.BLOCK_REVENUE_ON_ERROR_VAR),
    ({settings.UI_BASE_URL_VAR: "localhost:3000"}, settings.UI_BASE_URL_VAR),
    ({settings.SHRINK_FRACTION_VAR: "half"}, settings.SHRINK_FRACTION_VAR),
    ({settings.ALLOW_SHRINK_VAR: "credit_history"}, settings.ALLOW_SHRINK_VAR),
    ({settings.SOURCE_STALE_AFTER_HOURS_VAR: "-3"}, settings.SOURCE_STALE_AFTER_HOURS_VAR),
    ({settings.DUCKDB_TEMP_DIRECTORY_VAR: settings.__file__}, settings.DUCKDB_TEMP_DIRECTORY_VAR),
    (
        {settings.BIGQUERY_MAXIMUM_BYTES_BILLED_VAR: "10GB"},
        settings.BIGQUERY_MAXIMUM_BYTES_BILLED_VAR,
    ),
    ({settings.SMTP_PORT_VAR: "smtp"}, settings.SMTP_PORT_VAR),
    ({settings.SMTP_STARTTLS_VAR: "ture"}, settings.SMTP_STARTTLS_VAR),
]


@pytest.mark.parametrize(("bad", "named"), BAD_ENVIRONMENTS, ids=[n for _, n in BAD_ENVIRONMENTS])
def test_each_bad_variable_exits_2_with_exactly_one_line_naming_it(tmp_path, bad, named):
    run = _cli(tmp_path, "materialize", **{settings.SOURCE_URL_VAR: settings.DEMO_SOURCE, **bad})
    assert run.returncode == EXIT_USAGE, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"{PROG}: {named}") and "Traceback" not in run.stderr
    assert "hunter2" not in run.stdout + run.stderr
    assert not (tmp_path / "dagster_home").exists(), "no work before the configuration is checked"


@pytest.mark.parametrize(
    ("partition", "says"),
    [
        ("2026-13-45", "is not valid"),
        ("2999-01-01", "is in the future"),
        ("2001-01-01", "is before the ledger start"),
    ],
)
def test_a_bad_partition_exits_2_with_one_line_saying_which_days_are_allowed(
    tmp_path, partition, says
):
    run = _cli(
        tmp_path,
        "materialize",
        "--partition",
        partition,
        **{settings.SOURCE_URL_VAR: settings.DEMO_SOURCE},
    )
    assert run.returncode == EXIT_USAGE
    [line] = run.stderr.strip().splitlines()
    assert (
        line.startswith(f"{PROG}: --partition '{partition}' {says}")
        and settings.LEDGER_START_DATE_VAR in line
    )


def test_a_partition_and_a_full_refresh_together_are_one_usage_line(tmp_path):
    run = _cli(
        tmp_path,
        "materialize",
        "--partition",
        "2025-01-01",
        "--full-refresh",
        **{settings.SOURCE_URL_VAR: settings.DEMO_SOURCE},
    )
    assert run.returncode == EXIT_USAGE
    [line] = run.stderr.strip().splitlines()
    assert "--partition and --full-refresh exclude each other" in line


def test_a_usage_error_of_the_command_line_is_one_line_too(tmp_path):
    for args in (
        ["demo-data"],
        ["demo-data", "--url", "sqlite://", "--users", "0"],
        ["materialise"],
        ["demo-data", "--url", "not a url"],
    ):
        run = _cli(tmp_path, *args)
        assert run.returncode == EXIT_USAGE, args
        assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr, (
            run.stderr
        )


@pytest.mark.mysql
def test_demo_data_on_an_unreachable_server_fails_with_one_line_and_no_password(tmp_path):
    url = "mysql+pymysql://root:hunter2@127.0.0.1:1/syllaby_demo"
    run = _cli(tmp_path, "demo-data", "--url", url, "--users", "5", "--months", "1")
    assert run.returncode == 1
    [line] = run.stderr.strip().splitlines()
    assert "mysql+pymysql://127.0.0.1:1/syllaby_demo" in line and "hunter2" not in line


# -- no silent demo -------------------------------------------------------------------------------


def test_without_a_source_url_nothing_uses_the_demo(tmp_path):
    run = _cli(tmp_path, "materialize")
    assert run.returncode == EXIT_USAGE
    [line] = run.stderr.strip().splitlines()
    assert line.startswith(f"{PROG}: {settings.SOURCE_URL_VAR} is not set")

    load = subprocess.run(
        [sys.executable, "-c", "import credits_pipeline.definitions"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert load.returncode != 0
    assert f"ConfigurationError: {settings.SOURCE_URL_VAR} is not set" in load.stderr
    assert not (tmp_path / "data").exists(), "no demo database was created"


def test_a_source_resource_without_a_url_refuses_instead_of_creating_the_demo(
    tmp_path, monkeypatch
):
    from credits_pipeline.source.resource import SourceDatabase

    monkeypatch.delenv(settings.SOURCE_URL_VAR, raising=False)
    monkeypatch.setenv(settings.DATA_DIR_VAR, str(tmp_path))
    with pytest.raises(settings.ConfigurationError, match=settings.SOURCE_URL_VAR):
        SourceDatabase().engine()
    assert not settings.default_source_path().exists()


def test_only_the_readme_commands_choose_the_demo_when_no_url_is_set():
    makefile = (settings.PROJECT_ROOT / "Makefile").read_text()
    for target in ("materialize", "ui"):
        recipe = makefile.split(f"\n{target}: ")[1].split("\n\n")[0]
        assert (
            f"{settings.SOURCE_URL_VAR}=$${{{settings.SOURCE_URL_VAR}:-{settings.DEMO_SOURCE}}}"
            in recipe
        )


# -- demo-data never wipes a populated database ---------------------------------------------------


def _row_counts(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t.name: conn.execute(sa.text(f"SELECT COUNT(*) FROM {t.name}")).scalar_one()
                for t in TABLES
            }
    finally:
        engine.dispose()


def _refuses_then_replaces(url: str, capsys) -> None:
    assert main(["demo-data", "--url", url, "--users", "8", "--months", "2", "--seed", "3"]) == 0
    capsys.readouterr()
    before = _row_counts(url)
    assert before["credit_histories"] > 0

    assert (
        main(["demo-data", "--url", url, "--users", "5", "--months", "1", "--seed", "4"])
        == EXIT_USAGE
    )
    err = capsys.readouterr().err
    [line] = err.strip().splitlines()
    assert (
        "refused" in line
        and "--replace" in line
        and f"credit_histories {before['credit_histories']:,}" in line
    )
    assert _row_counts(url) == before, "a refused demo-data left every row"

    assert (
        main(
            ["demo-data", "--url", url, "--users", "5", "--months", "1", "--seed", "4", "--replace"]
        )
        == 0
    )
    out = capsys.readouterr().out
    for table, n in before.items():
        if n:
            assert f"{table} ({n:,} rows)" in out, table
    after = _row_counts(url)
    assert after != before and after["users"] == 5


def test_demo_data_refuses_a_populated_sqlite_database_unless_replace(fresh_sqlite_url, capsys):
    _refuses_then_replaces(fresh_sqlite_url, capsys)


@pytest.mark.mysql
def test_demo_data_refuses_a_populated_mariadb_database_unless_replace(fresh_mysql_url, capsys):
    _refuses_then_replaces(fresh_mysql_url, capsys)


@pytest.mark.postgres
def test_demo_data_refuses_a_populated_postgres_database_unless_replace(fresh_postgres_url, capsys):
    _refuses_then_replaces(fresh_postgres_url, capsys)


def test_an_empty_contract_table_is_no_reason_to_refuse(fresh_sqlite_url, capsys):
    from credits_pipeline.source.schema import create_tables

    create_tables(sa.create_engine(fresh_sqlite_url))
    assert main(["demo-data", "--url", fresh_sqlite_url, "--users", "5", "--months", "1"]) == 0
    assert "dropped" not in capsys.readouterr().out


# -- a real materialization -----------------------------------------------------------------------


def _instance(home: Path) -> dg.DagsterInstance:
    """The persistent instance the CLI subprocess wrote, opened from its directory."""
    from dagster._core.instance.ref import InstanceRef

    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))


def _started_run_ids(home: Path) -> list[str]:
    """Runs the CLI subprocess has marked STARTED, read from its run storage file read-only.

    Why not open the instance: a DagsterInstance opened while the subprocess is still creating
    its storage migrates the same SQLite file concurrently, and the two processes can stamp the
    schema version twice ("more than one head present"). A read-only connection writes nothing.
    """
    runs_db = home / "history" / "runs.db"
    if not runs_db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{runs_db}?mode=ro", uri=True, timeout=1) as con:
            rows = con.execute(
                "select run_id from runs where status = ?", (dg.DagsterRunStatus.STARTED.value,)
            ).fetchall()
    except sqlite3.OperationalError:  # not created yet, or locked by the writer for a moment
        return []
    return [run_id for (run_id,) in rows]


def _warehouse(tmp_path: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _table_row(stdout: str, asset: str) -> list[str]:
    """The cells of the summary table's line for `asset`."""
    [line] = [ln for ln in stdout.splitlines() if re.match(rf"^│ {re.escape(asset)} +│", ln)]
    return [cell.strip() for cell in line.strip("│").split("│")]


def test_materialize_shows_progress_and_a_summary_table_of_the_warehouses_own_numbers(tmp_path):
    url = _demo_source(tmp_path)
    run = _cli(tmp_path, "materialize", **{settings.SOURCE_URL_VAR: url})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    users = _warehouse(tmp_path, "select count(*) from raw.users")[0][0]
    # the first line says where the run writes, as the chosen warehouse resource describes itself
    assert f"warehouse {tmp_path / 'warehouse.duckdb'}" in " ".join(run.stdout.split())
    # progress: one line per step with its rows; no raw Dagster or dbt log lines by default
    assert re.search(
        r"✓ raw/credit_histories__open, raw/extraction_cutoff, raw/users +[\d,]+ rows +[\d.]+ s",
        run.stdout,
    )
    assert " - dagster - " not in run.stdout + run.stderr and "Running with dbt=" not in run.stdout
    # a ranged run's ledger partitions add up on the progress line as in the summary table
    progress = re.search(r"✓ raw/credit_histories +([\d,]+) rows", run.stdout)
    assert progress and progress.group(1) == _table_row(run.stdout, "raw/credit_histories")[2]
    assert int(progress.group(1).replace(",", "")) > 0
    # summary table: one line per asset, rows loaded as in the warehouse
    _asset, status, loaded, _quarantined, _ = _table_row(run.stdout, "raw/users")
    assert status == "materialized" and int(loaded.replace(",", "")) == users
    assert _table_row(run.stdout, "marts/user_balance_reconciliation")[1] == "materialized"
    moved = int(re.search(r"rows moved into raw: (\d+)", run.stdout).group(1))
    loaded_cells = [
        _table_row(run.stdout, a)[2] for a in ("raw/users", "raw/credit_histories", "raw/plans")
    ]
    assert all(cells for cells in loaded_cells) and moved >= sum(
        int(c.replace(",", "")) for c in loaded_cells
    )

    # the run belongs to the workspace's code location and carries its failed check counts
    module, location = _workspace_location()
    run_id = re.search(r"run id: ([0-9a-f-]{36})", run.stdout).group(1)
    with _instance(tmp_path / "dagster_home") as instance:
        record = instance.get_run_by_id(run_id)
        origin = record.remote_job_origin
        assert origin is not None and origin.location_name == location == "credits_pipeline"
        assert record.job_code_origin.repository_origin.code_pointer.module == module
        failed = [
            e.asset_check_evaluation
            for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        ]
        failed = [ev for ev in failed if not ev.passed]
        errors = sum(1 for ev in failed if ev.severity == dg.AssetCheckSeverity.ERROR)
        warns = sum(1 for ev in failed if ev.severity == dg.AssetCheckSeverity.WARN)
        assert errors > 0
        assert record.tags[FAILED_ERROR_CHECKS_TAG] == str(errors)
        assert record.tags[FAILED_WARN_CHECKS_TAG] == str(warns)
        # the source was observed first, in a run of its own: no source table reads "Missing"
        observed = {
            t.name: instance.fetch_observations(source_key(t.name), limit=1).records for t in TABLES
        }
        assert all(observed.values()), [name for name, records in observed.items() if not records]
        ledger_rows = (
            observed["credit_histories"][0].asset_observation.metadata[ROW_COUNT_METADATA].value
        )
    assert f"observed syllaby_v2: {len(TABLES)} tables, {ledger_rows:,} ledger rows" in run.stdout
    assert f"checks failed: {errors + warns} ({errors} ERROR, {warns} WARN)" in run.stdout
    # failing ledger rules and no alert variable set: the summary says they alert nobody
    assert "No alert channel is configured" in run.stdout


def test_the_summary_names_what_was_not_built_and_why_and_where_rows_were_quarantined(tmp_path):
    url = _demo_source(tmp_path)
    with sqlite3.connect(url.removeprefix("sqlite:///")) as con:
        con.execute("drop table plans")  # a broken source: one table the contract needs is gone
    run = _cli(tmp_path, "materialize", **{settings.SOURCE_URL_VAR: url})
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stdout + run.stderr

    # the cause, once, with the step, the table and what to do
    assert run.stderr.count("syllaby_v2.plans: the table does not exist") == 1
    assert "raw/plans (step raw__plans)" in run.stderr and "what to do:" in run.stderr
    assert _table_row(run.stdout, "raw/plans")[1].startswith("FAILED")
    skipped = [
        a
        for a in ("marts/plan_utilization", "marts/revenue_attribution")
        if "skipped: upstream" in _table_row(run.stdout, a)[1]
        and "raw/plans" in _table_row(run.stdout, a)[1]
    ]
    assert skipped, run.stdout[-4000:]

    # quarantined rows per table, with the relation that holds them, as the warehouse holds them
    rejected = _warehouse(
        tmp_path, "select count(distinct id) from raw.credit_histories__rejected"
    )[0][0]
    assert rejected > 0
    shown = 0
    for asset in ("raw/credit_histories", "raw/credit_histories__open"):
        _, _, _, quarantined, relation = _table_row(run.stdout, asset)
        if quarantined and int(quarantined) > 0:
            assert relation == "raw.credit_histories__rejected"
            shown += int(quarantined)
    assert shown == rejected


def test_a_run_left_started_by_a_killed_process_is_marked_failed_on_the_next_start(tmp_path):
    url = _demo_source(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "credits_pipeline.cli", "materialize"],
        env=_env(tmp_path, **{settings.SOURCE_URL_VAR: url}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    home = tmp_path / "dagster_home"
    try:
        deadline = time.monotonic() + KILL_DEADLINE_SECONDS
        started = []
        while not started and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            started = _started_run_ids(home)
        assert started, "the run never started"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    with _instance(home) as instance:
        [run_id] = started
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
        [line] = mark_interrupted_runs_failed(instance)
        assert run_id in line and "interrupted" in line
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
        assert mark_interrupted_runs_failed(instance) == []  # once
