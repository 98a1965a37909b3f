"""Benchmark: extracting the ledger `credit_histories` from MariaDB into DuckDB, validated by
pandera.

The ledger is the one table that grows without bound, so its extraction must cost about what the
source itself needs to hand the rows over. This script seeds a dedicated MariaDB database with N
realistic ledger rows (the SEQUENCE engine's `seq_1_to_N`, one INSERT ... SELECT, ~365 days of
`created_at`), then measures, each in a fresh subprocess so that peak RSS belongs to that run alone:
the `mariadb --batch --quick` client dumping the same rows and columns to /dev/null (the floor),
`pandas.read_sql` through SQLAlchemy/pymysql (what naive pipelines do), and the pipeline's own path
— fast reader (connectorx), pandera validation, the real `Stager` load and `swap_ledger_range` into
a temporary DuckDB — for the whole table and for one daily partition. Targets: whole extraction
<= 2x the client dump and < 1 GB peak RSS; one partition < 2 s (process start excluded).

    .venv/bin/python bench/extract.py [--rows 5000000] [--skip-naive] [--skip-seed]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_ROWS = 5_000_000
DATABASE = "credits_bench"
HOST, PORT, USER = "127.0.0.1", 3306, "root"
SERVER_URL = f"mysql+pymysql://{USER}@{HOST}:{PORT}/"
SOURCE_URL = f"mysql+pymysql://{USER}@{HOST}:{PORT}/{DATABASE}"
FIRST_DAY = dt.date(2025, 1, 1)
SEED_SECONDS = 365 * 86_400  # created_at spread over one year, in id order
ONE_DAY = dt.date(2025, 7, 1)
TARGET_RATIO = 2.0
TARGET_RSS_MB = 1024
TARGET_PARTITION_SECONDS = 2.0

# MariaDB: % is SQL's modulo, but pymysql would read it as a format directive, hence MOD.
SEED_SQL = """
INSERT INTO credit_histories (id, user_id, credit_events_id, creditable_type, creditable_id,
  description, label, calculative_index, event_value, amount, previous_amount, event_type, meta,
  created_at, updated_at)
SELECT seq,
  1 + seq MOD 100003,
  1 + seq MOD 14,
  ELT(1 + seq MOD 6, 'faceless', 'video', 'speech', 'real-clone', 'keyword', NULL),
  IF(seq MOD 6 = 5, NULL, seq DIV 7),
  IF(seq MOD 3 = 0, NULL, CONCAT('Credits used for item ', seq MOD 9973)),
  IF(seq MOD 2 = 0, NULL, 'faceless_video_generated'),
  seq MOD 40, 2 + seq MOD 13, seq MOD 500, seq MOD 5000,
  IF(seq MOD 9973 = 0, 3, 1 + (seq MOD 9 = 0)),
  CASE seq MOD 4 WHEN 0 THEN '[]' WHEN 1 THEN CONCAT('{{"credits": ', seq MOD 1000, '}}')
       WHEN 2 THEN '{{"video_id": 1, "duration": 12.5}}' ELSE NULL END,
  TIMESTAMP('{first}') + INTERVAL (seq * {span} DIV {rows}) SECOND,
  TIMESTAMP('{first}') + INTERVAL (seq * {span} DIV {rows} + seq MOD 60) SECOND
FROM seq_1_to_{rows}
"""


def seed(rows: int) -> float:
    """(Re)create the bench database with `rows` ledger rows; return the seconds it took."""
    import sqlalchemy as sa

    from credits_pipeline.source.schema import create_tables

    started = time.perf_counter()
    server = sa.create_engine(SERVER_URL)
    with server.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {DATABASE}")
        conn.exec_driver_sql(f"CREATE DATABASE {DATABASE}")
    server.dispose()
    engine = sa.create_engine(SOURCE_URL, connect_args={"init_command": "SET time_zone = '+00:00'"})
    create_tables(engine, drop_first=False)
    with engine.begin() as conn:
        # Secondary indexes are built once, by sorting, after the load: several times faster than
        # maintaining three B-trees row by row.
        indexes = [
            r[2]
            for r in conn.exec_driver_sql("SHOW INDEX FROM credit_histories").fetchall()
            if r[2] != "PRIMARY"
        ]
        index_ddl = conn.exec_driver_sql("SHOW CREATE TABLE credit_histories").fetchone()[1]
        for name in dict.fromkeys(indexes):
            conn.exec_driver_sql(f"ALTER TABLE credit_histories DROP INDEX {name}")
        conn.exec_driver_sql(
            SEED_SQL.format(first=FIRST_DAY.isoformat(), span=SEED_SECONDS, rows=rows)
        )
        keys = [
            line.strip().rstrip(",")
            for line in index_ddl.splitlines()
            if line.strip().startswith("KEY ")
        ]
        if keys:
            conn.exec_driver_sql(
                "ALTER TABLE credit_histories " + ", ".join(f"ADD {k}" for k in keys)
            )
    engine.dispose()
    return time.perf_counter() - started


def _bounds(scope: str) -> tuple[dt.date, dt.date]:
    if scope == "day":
        return ONE_DAY, ONE_DAY + dt.timedelta(days=1)
    return FIRST_DAY, FIRST_DAY + dt.timedelta(days=366)  # every seeded row, the last one included


def _where(scope: str) -> tuple[str, dict]:
    start, end = _bounds(scope)
    return "created_at >= :start AND created_at < :end", {
        "start": dt.datetime.combine(start, dt.time()),
        "end": dt.datetime.combine(end, dt.time()),
    }


def _sql(scope: str) -> str:
    """The exact SELECT the pipeline sends, for the baselines to read the same rows and columns."""
    from credits_pipeline.source.fast_reader import render_sql
    from credits_pipeline.source.tables import CREDIT_HISTORIES

    where, params = _where(scope)
    return render_sql("mysql", CREDIT_HISTORIES, where, params)


def _own_peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the measured runs (each in its own subprocess) ----------------------------------------------


# A minimal interpreter that runs the client and reports its peak RSS: RUSAGE_CHILDREN of a process
# that imported pandas would also count the forked copy of that process before `exec`.
CLIENT_WRAPPER = """
import json, os, resource, subprocess, sys, time
started = time.perf_counter()
with open(os.devnull, "w") as sink:
    subprocess.run(sys.argv[1:], stdout=sink, check=True)
seconds = time.perf_counter() - started
print(json.dumps({
    "seconds": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
}))
"""


def measure_client(scope: str) -> dict:
    """The floor: the MariaDB client streaming the same result to /dev/null."""
    return client_dump(DATABASE, _sql(scope))


def client_dump(database: str, sql: str) -> dict:
    """`mariadb --batch --quick` running `sql` on `database` into /dev/null: seconds, peak RSS."""
    command = [
        "mariadb",
        "--batch",
        "--quick",
        f"--host={HOST}",
        f"--port={PORT}",
        f"--user={USER}",
        "--init-command=SET time_zone = '+00:00'",
        database,
        "-e",
        sql,
    ]
    out = subprocess.run(
        [sys.executable, "-S", "-c", CLIENT_WRAPPER, *command],
        capture_output=True,
        text=True,
        check=True,
    )
    return {**json.loads(out.stdout), "rows": None}


def measure_naive(scope: str) -> dict:
    """What naive pipelines do: the whole result into one DataFrame through SQLAlchemy/pymysql."""
    import pandas as pd
    import sqlalchemy as sa

    engine = sa.create_engine(SOURCE_URL, connect_args={"init_command": "SET time_zone = '+00:00'"})
    started = time.perf_counter()
    frame = pd.read_sql(sa.text(_sql(scope)), engine)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rss_mb": _own_peak_rss_mb(), "rows": len(frame)}


def measure_pipeline(scope: str, fast: bool = True) -> dict:
    """The pipeline: read, validate with pandera, stage and swap into DuckDB (the ledger asset's
    path)."""
    import connectorx  # noqa: F401 - imported before the clock starts, like the modules above:

    import credits_pipeline.validation.typed  # noqa: F401 - process start is not what is measured
    from credits_pipeline.extract.common import finish_tally, stage_batches
    from credits_pipeline.source import fast_reader
    from credits_pipeline.source.reader import create_source_engine
    from credits_pipeline.source.reader import read_batches as robust_read_batches
    from credits_pipeline.source.tables import CREDIT_HISTORIES
    from credits_pipeline.warehouse import session
    from credits_pipeline.warehouse.duckdb_warehouse import DuckDBWarehouse

    fallbacks: list[str] = []
    start, end = _bounds(scope)
    where, params = _where(scope)
    with tempfile.TemporaryDirectory() as tmp:
        warehouse = DuckDBWarehouse(path=str(Path(tmp) / "warehouse.duckdb"))
        engine = create_source_engine(SOURCE_URL)
        started = time.perf_counter()
        with engine.connect() as conn, warehouse.connect() as con:
            stager = session.stager(con, CREDIT_HISTORIES)
            if fast:
                batches = fast_reader.read_batches(
                    SOURCE_URL,
                    CREDIT_HISTORIES,
                    where,
                    params,
                    fallback_conn=conn,
                    on_fallback=fallbacks.append,
                )
            else:
                batches = robust_read_batches(conn, CREDIT_HISTORIES, where, params)
            tally = stage_batches(stager, batches, label=start.isoformat())
            stager.swap_ledger_range(start, end)
            finish_tally(tally, stager)
            stored = con.execute(f"select count(*) from raw.{CREDIT_HISTORIES.name}").fetchone()[0]
        seconds = time.perf_counter() - started
        engine.dispose()
    return {
        "seconds": seconds,
        "rss_mb": _own_peak_rss_mb(),
        "rows": tally.rows_read,
        "loaded": tally.rows_loaded,
        "stored": int(stored),
        "quarantined": tally.rows_rejected,
        "domain_warnings": sum(tally.domain_warnings.values()),
        "fallbacks": len(fallbacks),
    }


MEASURES = {
    "client": measure_client,
    "naive": measure_naive,
    "pipeline": measure_pipeline,
    "robust": lambda scope: measure_pipeline(scope, fast=False),
}


def run_child(kind: str, scope: str) -> dict:
    """Run one measurement in a fresh interpreter; its figures come back as JSON on stdout."""
    out = subprocess.run(
        [sys.executable, __file__, "--measure", kind, "--scope", scope],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"{kind}/{scope} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _row(label: str, r: dict, rows: int, client: dict, naive: dict | None) -> str:
    rate = rows / r["seconds"] if r["seconds"] else float("nan")
    vs_client = f"{r['seconds'] / client['seconds']:.2f}x"
    vs_naive = f"{r['seconds'] / naive['seconds']:.2f}x" if naive else "-"
    return (
        f"  {label:<34} {r['seconds']:>8.2f} s {rate:>12,.0f} rows/s {r['rss_mb']:>8.0f} MB   "
        f"{vs_client:>7} {vs_naive:>7}"
    )


def report(scope: str, results: dict[str, dict]) -> list[str]:
    client, naive, pipe = results["client"], results.get("naive"), results["pipeline"]
    rows = pipe["rows"]
    title = "whole credit_histories" if scope == "full" else f"one daily partition ({ONE_DAY})"
    lines = [
        f"{title}: {rows:,} rows",
        f"  {'':<34} {'seconds':>10} {'throughput':>19} {'peak RSS':>11}   {'/client':>7} "
        f"{'/naive':>7}",
        _row("mariadb --batch --quick > /dev/null", client, rows, client, naive),
    ]
    if naive:
        lines.append(_row("pandas.read_sql (SQLAlchemy/pymysql)", naive, rows, client, naive))
    if "robust" in results:
        lines.append(
            _row("pipeline, SQLAlchemy reader (before)", results["robust"], rows, client, naive)
        )
    lines.append(_row("pipeline: connectorx+pandera+DuckDB", pipe, rows, client, naive))
    lines.append(
        f"  pipeline rows: {pipe['loaded']:,} loaded ({pipe['stored']:,} in raw), "
        f"{pipe['quarantined']:,} quarantined, {pipe['domain_warnings']:,} domain warnings, "
        f"{pipe['fallbacks']} fallback(s) to SQLAlchemy"
    )
    ratio = pipe["seconds"] / client["seconds"]
    if scope == "full":
        lines.append(
            f"  target: <= {TARGET_RATIO:.0f}x client and < {TARGET_RSS_MB} MB: ratio {ratio:.2f}x "
            f"{'OK' if ratio <= TARGET_RATIO else 'MISSED'}, peak RSS {pipe['rss_mb']:.0f} MB "
            f"{'OK' if pipe['rss_mb'] < TARGET_RSS_MB else 'MISSED'}"
        )
    else:
        ok = pipe["seconds"] < TARGET_PARTITION_SECONDS
        lines.append(
            f"  target: < {TARGET_PARTITION_SECONDS:.0f} s: {pipe['seconds']:.2f} s "
            f"{'OK' if ok else 'MISSED'}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument(
        "--skip-naive", action="store_true", help="skip pandas.read_sql (~70 s, ~5 GB at 5M)"
    )
    parser.add_argument(
        "--skip-seed", action="store_true", help="reuse the existing bench database"
    )
    parser.add_argument(
        "--with-robust",
        action="store_true",
        help="also time the SQLAlchemy reader on the whole table",
    )
    parser.add_argument("--measure", choices=sorted(MEASURES), help=argparse.SUPPRESS)
    parser.add_argument("--scope", choices=["full", "day"], default="full", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure:
        print(json.dumps(MEASURES[args.measure](args.scope)))
        return
    if not args.skip_seed:
        print(f"seeding {DATABASE} on {HOST}:{PORT} with {args.rows:,} ledger rows ...", flush=True)
        print(f"  seeded in {seed(args.rows):.1f} s", flush=True)
    print(
        f"load average before measuring: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores",
        flush=True,
    )
    for scope in ("full", "day"):
        results = {"client": run_child("client", scope)}
        if not (args.skip_naive and scope == "full"):
            results["naive"] = run_child("naive", scope)
        if args.with_robust or scope == "day":
            results["robust"] = run_child("robust", scope)
        results["pipeline"] = run_child("pipeline", scope)
        print("\n".join(report(scope, results)), flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
