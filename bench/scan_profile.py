"""Benchmark: rows each run reads from each warehouse table, measured by DuckDB's profiler.

`docs/deployment.md` estimates the bytes a daily BigQuery run scans from the columns each statement
reads; the emulator bills nothing, so the estimate was never measured. This script measures the
same statements on DuckDB: it builds an embedded SQLite demo source (`credits-pipeline demo-data`,
kept in the work directory), then runs `credits-pipeline materialize` twice on one warehouse — a
full run with the cut-off pinned at yesterday's midnight, and the next day's run with the cut-off
at today's midnight (the demo's last day becomes visible) — with `bench/scan_hook/` on PYTHONPATH,
which turns on DuckDB's JSON profiling for every statement on the warehouse file, in the
pipeline's process and in dbt's. It prints, per table, the rows the table scans read (after
DuckDB's zone-map pruning, i.e. what a partition/cluster-pruned engine would read) in each run,
by process, and the daily run's reads against the day's new ledger rows.

    .venv/bin/python bench/scan_profile.py [--users 500] [--months 6]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]
from memory import demo_data_command  # noqa: E402  (bench/memory.py, beside this script)

HOOK_DIR = BENCH / "scan_hook"
PROFILE_DIR_VAR = "CREDITS_SCAN_PROFILE_DIR"
DEFAULT_USERS = 500
DEFAULT_MONTHS = 6


def make_source(workdir: Path, users: int, months: int, env: dict[str, str]) -> Path:
    path = workdir / f"syllaby_v2_{users}u_{months}m.sqlite"
    if not path.exists():
        subprocess.run(
            demo_data_command(f"sqlite:///{path}", users, months),
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return path


def ledger_rows(source: Path, start: dt.datetime | None, end: dt.datetime) -> int:
    con = sqlite3.connect(source)
    try:
        sql = "select count(*) from credit_histories where created_at < ?"
        params: list[str] = [end.isoformat(sep=" ")]
        if start is not None:
            sql += " and created_at >= ?"
            params.append(start.isoformat(sep=" "))
        return con.execute(sql, params).fetchone()[0]
    finally:
        con.close()


def table_name(qualified: str) -> str:
    """'warehouse.raw.credit_histories' -> 'raw.credit_histories' (temp tables keep 'temp.')."""
    parts = qualified.split(".")
    return ".".join(parts[1:]) if len(parts) == 3 and parts[0] != "temp" else qualified


def read_profiles(directory: Path) -> dict[tuple[str, str], list[int]]:
    """(process, table) -> [rows scanned, scans] over every profiled statement of a run."""
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for path in directory.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            for table, rows in entry["scans"]:
                total = totals[(entry["process"], table_name(table))]
                total[0] += rows
                total[1] += 1
    return totals


def materialize(env: dict[str, str], cutoff: dt.datetime, profile_dir: Path, log: Path) -> float:
    profile_dir.mkdir()
    run_env = {**env, "CREDITS_CUTOFF_AT": cutoff.isoformat(), PROFILE_DIR_VAR: str(profile_dir)}
    started = time.monotonic()
    with log.open("w") as out:
        code = subprocess.run(
            [sys.executable, "-m", "credits_pipeline.cli", "materialize", "--log-level", "WARNING"],
            env=run_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        ).returncode
    if code:
        print(log.read_text()[-3000:])
        raise SystemExit(code)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=DEFAULT_USERS)
    parser.add_argument("--months", type=int, default=DEFAULT_MONTHS)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "credits_bench_scan"
    )
    parser.add_argument(
        "--min-rows", type=int, default=1, help="leave out tables read fewer rows in both runs"
    )
    args = parser.parse_args()

    from credits_pipeline import settings

    args.workdir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DAGSTER_DISABLE_TELEMETRY": "yes",
        "PYTHONPATH": os.pathsep.join([str(HOOK_DIR), str(ROOT)]),
    }
    source = make_source(args.workdir, args.users, args.months, env)
    run_dir = Path(tempfile.mkdtemp(prefix="run_", dir=args.workdir))
    midnight = dt.datetime.combine(dt.datetime.now(dt.UTC).date(), dt.time())
    first_day = (midnight - dt.timedelta(days=31 * args.months + 31)).date()
    env.update(
        {
            settings.SOURCE_URL_VAR: f"sqlite:///{source}",
            settings.WAREHOUSE_PATH_VAR: str(run_dir / "warehouse.duckdb"),
            settings.LEDGER_START_DATE_VAR: first_day.isoformat(),
            "DAGSTER_HOME": str(run_dir / "dagster_home"),
        }
    )
    (run_dir / "dagster_home").mkdir()

    full_cutoff, daily_cutoff = midnight - dt.timedelta(days=1), midnight
    full_wall = materialize(env, full_cutoff, run_dir / "profile_full", run_dir / "full.log")
    daily_wall = materialize(env, daily_cutoff, run_dir / "profile_daily", run_dir / "daily.log")
    full, daily = read_profiles(run_dir / "profile_full"), read_profiles(run_dir / "profile_daily")

    n = ledger_rows(source, None, full_cutoff)
    d = ledger_rows(source, full_cutoff, daily_cutoff)
    print(
        f"demo: {args.users:,} users, {args.months} months; ledger rows before the full run's "
        f"cut-off N = {n:,}; the next day's new rows D = {d:,}"
    )
    print(f"wall: full run {full_wall:,.0f} s, daily run {daily_wall:,.0f} s (profiling on)")
    print()
    print(
        f"{'process':9} {'table':48} {'full: rows':>12} {'scans':>6} {'daily: rows':>12} "
        f"{'scans':>6} {'daily/N':>8} {'daily/D':>8}"
    )
    for key in sorted(set(full) | set(daily), key=lambda k: (k[0], -daily.get(k, [0])[0])):
        f_rows, f_scans = full.get(key, [0, 0])
        d_rows, d_scans = daily.get(key, [0, 0])
        if max(f_rows, d_rows) < args.min_rows:
            continue
        print(
            f"{key[0]:9} {key[1]:48} {f_rows:12,} {f_scans:6,} {d_rows:12,} {d_scans:6,} "
            f"{d_rows / max(n, 1):8.2f} {d_rows / max(d, 1):8.1f}"
        )
    for process in ("pipeline", "dbt"):
        f_total = sum(v[0] for k, v in full.items() if k[0] == process)
        d_total = sum(v[0] for k, v in daily.items() if k[0] == process)
        print(
            f"total {process}: full {f_total:,} rows, daily {d_total:,} rows "
            f"({d_total / max(n, 1):.2f} × N, {d_total / max(d, 1):.0f} × D)"  # noqa: RUF001 (deliberate multiplication sign in the printed report)
        )
    print(f"profiles: {run_dir}")


if __name__ == "__main__":
    main()
