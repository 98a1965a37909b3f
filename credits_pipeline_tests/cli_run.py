"""Running `credits-pipeline materialize` as a user does, in an isolated home, and reading back.

The safety tests (redaction, the shrink guard, quarantined users, schema drift) judge what a real
run leaves behind: the terminal output, the Dagster instance under `DAGSTER_HOME` and the DuckDB
warehouse. Each run gets its own `DAGSTER_HOME` and warehouse file under the test's tmp directory.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import duckdb

from credits_pipeline import settings

PARTITION_DAYS = (
    40  # the ledger's partitions cover the last 40 days; older rows go to the open slice
)
RUN_TIMEOUT_SECONDS = 900


def materialize(
    tmp_path: Path,
    source_url: str,
    *,
    warehouse: Path | None = None,
    args: tuple[str, ...] = (),
    **extra_env: str,
) -> subprocess.CompletedProcess:
    """`credits-pipeline materialize [args]` on `source_url`, warehouse and instance under
    `tmp_path`."""
    today = dt.datetime.now(dt.UTC).date()
    env = {
        **os.environ,
        settings.SOURCE_URL_VAR: source_url,
        settings.WAREHOUSE_PATH_VAR: str(warehouse or tmp_path / "warehouse.duckdb"),
        settings.LEDGER_START_DATE_VAR: (today - dt.timedelta(days=PARTITION_DAYS)).isoformat(),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "DAGSTER_DISABLE_TELEMETRY": "yes",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        **extra_env,
    }
    for name in (settings.ALLOW_SHRINK_VAR, settings.SHRINK_FRACTION_VAR):
        if name not in extra_env:
            env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "credits_pipeline.cli", "materialize", "--log-level", "INFO", *args],
        check=False,  # the caller judges the exit code
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
    )


def warehouse_rows(warehouse: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def every_relation(
    warehouse: Path, schemas: tuple[str, ...] = ("raw", "marts")
) -> dict[str, list[str]]:
    """Every table of `schemas` as sorted row reprs: to compare two states of the warehouse."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        names = con.execute(
            "select table_schema || '.' || table_name from information_schema.tables "
            f"where table_schema in ({', '.join('?' for _ in schemas)}) "
            "and table_type = 'BASE TABLE' "
            "order by 1",
            list(schemas),
        ).fetchall()
        return {
            n: sorted(map(repr, con.execute(f"select * from {n}").fetchall())) for (n,) in names
        }
    finally:
        con.close()


def warehouse_text(warehouse: Path) -> str:
    """Every string value of every table of every schema, one per line (to look for a secret)."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        columns = con.execute(
            "select table_schema, table_name, column_name from information_schema.columns "
            "where data_type = 'VARCHAR' and table_catalog = current_database()"
        ).fetchall()
        out = []
        for schema, table, column in columns:
            values = con.execute(
                f'select "{column}" from "{schema}"."{table}" where "{column}" is not null'
            ).fetchall()
            out.extend(v for (v,) in values)
        return "\n".join(out)
    finally:
        con.close()
