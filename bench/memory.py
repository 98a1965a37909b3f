"""Benchmark: peak memory of each process of a full `credits-pipeline materialize`, and wall time.

Issue 10 measured 6.9 GB in the largest single process at 100k users (dbt's DuckDB during the SQL
replay 6.2 GB, the pipeline's own process 2.3 GB) against a target of < 2 GB each. This script
builds an embedded SQLite demo source of N users (`credits-pipeline demo-data`, kept between runs
in the work directory), then runs one full materialization into a fresh DuckDB warehouse with
`CREDITS_SOURCE_URL` set explicitly, and samples the memory of the pipeline's process and of
every subprocess it starts (dbt) every `--interval` seconds. It prints the peak RSS of the
pipeline process, of the largest dbt process, of the whole process tree at once, the DuckDB
memory limit and spill directory in force (`CREDITS_DUCKDB_MEMORY_LIMIT` or the default sized from
this machine, `credits_pipeline/warehouse/memory.py`), the spill directory's peak size, and the
wall time. A process's peak is the kernel's own high-water mark (VmHWM) as last read before the
process ended; the whole tree's is the sum of the processes' RSS at one sample, which can miss a
peak shorter than the interval: the figures are a floor.

The process tree and its memory are read from /proc (Linux only), which spares the benchmarks a
dependency (psutil) the project does not declare.

    .venv/bin/python bench/memory.py [--users 20000] [--months 12] [--memory-limit 2GB]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_USERS = 20_000
DEFAULT_MONTHS = 12
DEFAULT_INTERVAL = 0.2
MB = 1024**2
PROC = Path("/proc")
TARGET_PROCESS_BYTES = 2 * 1024**3  # issue 10: every process < 2 GB


@dataclass
class Peaks:
    """Peak RSS per process (pid -> bytes, with its role) and of the tree as a whole."""

    by_pid: dict[int, int] = field(default_factory=dict)
    roles: dict[int, str] = field(default_factory=dict)
    tree: int = 0
    spill: int = 0
    peak_at: dict[int, float] = field(default_factory=dict)  # pid -> epoch seconds of its peak
    # (epoch seconds, RSS bytes) of the root process at every sample: what it held at any moment,
    # e.g. when the step of its peak started (the memory earlier steps left behind)
    root_samples: list[tuple[float, int]] = field(default_factory=list)

    def role_peak(self, role: str) -> int:
        return max((b for p, b in self.by_pid.items() if self.roles[p] == role), default=0)

    def root_rss_at(self, moment: float) -> int | None:
        """The root process's RSS at the first sample taken at or after `moment` (epoch s)."""
        return next((rss for t, rss in self.root_samples if t >= moment), None)

    def role_peak_at(self, role: str) -> float | None:
        """When (epoch seconds, to the sampling interval) the role's largest process peaked."""
        pids = [p for p in self.by_pid if self.roles[p] == role]
        if not pids:
            return None
        return self.peak_at.get(max(pids, key=lambda p: self.by_pid[p]))


def process_tree(root_pid: int) -> list[int]:
    """`root_pid` and every process descending from it, from each process's parent in
    /proc/<pid>/stat (a process gone while it is read is left out)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (command) state ppid ...: the command may hold spaces and parentheses
        parent = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    tree = [root_pid]
    for pid in tree:
        tree.extend(children.get(pid, []))
    return tree


def memory_of(pid: int) -> tuple[int, int] | None:
    """(resident set size, its peak so far) of `pid` in bytes, from /proc/<pid>/status (VmRSS,
    VmHWM); None for a process that is gone or a zombie (which has no memory left)."""
    try:
        status = (PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    kilobytes = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            kilobytes[key] = int(value.split()[0])
    if len(kilobytes) < 2:
        return None
    return kilobytes["VmRSS"] * 1024, kilobytes["VmHWM"] * 1024


def role_of(pid: int, root_pid: int) -> str:
    """'pipeline' (the CLI's own process), 'dbt' (a dbt subprocess) or 'other'."""
    if pid == root_pid:
        return "pipeline"
    try:
        command = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "other"
    # `dbt build ...` is `python .../bin/dbt build ...` once the shebang is resolved
    return "dbt" if any(Path(os.fsdecode(arg)).name == "dbt" for arg in command[:2]) else "other"


def directory_bytes(path: Path) -> int:
    """Bytes under `path` now; DuckDB creates and deletes its spill files while we walk them."""
    total = 0
    try:
        for p in path.rglob("*"):
            with contextlib.suppress(FileNotFoundError):
                if p.is_file():
                    total += p.stat().st_size
    except FileNotFoundError:  # the directory itself went away mid-walk
        pass
    return total


def sample(root_pid: int, peaks: Peaks, spill_dir: Path) -> None:
    total = 0
    for pid in process_tree(root_pid):
        memory = memory_of(pid)
        if memory is None:
            continue
        rss, peak = memory
        if pid == root_pid:
            peaks.root_samples.append((time.time(), rss))
        if pid not in peaks.roles:
            peaks.roles[pid] = role_of(pid, root_pid)
        # VmHWM only grows: the first sample that shows a higher one dates the peak
        if max(peak, rss) > peaks.by_pid.get(pid, 0):
            peaks.by_pid[pid] = max(peak, rss)
            peaks.peak_at[pid] = time.time()
        total += rss
    peaks.tree = max(peaks.tree, total)
    peaks.spill = max(peaks.spill, directory_bytes(spill_dir))


def run_sampled(
    command: list[str], env: dict[str, str], log: Path, spill_dir: Path, interval: float
) -> tuple[int, float, Peaks]:
    """Run `command` (output into `log`), sampling its process tree; (exit code, wall s, peaks)."""
    if not (PROC / "self" / "status").exists():
        sys.exit("bench/memory.py reads process memory from /proc: it runs on Linux only")
    peaks = Peaks()
    started = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        while process.poll() is None:
            sample(process.pid, peaks, spill_dir)
            time.sleep(interval)
    return process.returncode, time.monotonic() - started, peaks


def demo_data_command(url: str, users: int, months: int, *extra: str) -> list[str]:
    """`credits-pipeline demo-data` for a source of `users` users (shared by the benchmarks)."""
    return [
        sys.executable,
        "-m",
        "credits_pipeline.cli",
        "demo-data",
        "--url",
        url,
        "--users",
        str(users),
        "--months",
        str(months),
        *extra,
    ]


def make_source(workdir: Path, users: int, months: int, env: dict[str, str]) -> str:
    """The SQLite demo source of `users` users (created once, reused by later runs)."""
    path = workdir / f"syllaby_v2_{users}u_{months}m.sqlite"
    url = f"sqlite:///{path}"
    if not path.exists():
        started = time.monotonic()
        subprocess.run(
            demo_data_command(url, users, months),
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        print(
            f"demo source: {users:,} users, {months} months, built in "
            f"{time.monotonic() - started:.0f} s -> {path}"
        )
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=DEFAULT_USERS)
    parser.add_argument("--months", type=int, default=DEFAULT_MONTHS)
    parser.add_argument(
        "--memory-limit", default="", help="CREDITS_DUCKDB_MEMORY_LIMIT (default: sized)"
    )
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "credits_bench_memory"
    )
    args = parser.parse_args()

    from credits_pipeline import settings
    from credits_pipeline.warehouse import memory

    args.workdir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DAGSTER_DISABLE_TELEMETRY": "yes",
    }
    env.pop(settings.DUCKDB_MEMORY_LIMIT_VAR, None)
    env.pop(settings.DUCKDB_TEMP_DIRECTORY_VAR, None)
    if args.memory_limit:
        env[settings.DUCKDB_MEMORY_LIMIT_VAR] = args.memory_limit
    source_url = make_source(args.workdir, args.users, args.months, env)

    run_dir = Path(tempfile.mkdtemp(prefix="run_", dir=args.workdir))
    warehouse = run_dir / "warehouse.duckdb"
    first_day = dt.datetime.now(dt.UTC).date().replace(day=1) - dt.timedelta(days=31 * args.months)
    env.update(
        {
            settings.SOURCE_URL_VAR: source_url,
            settings.WAREHOUSE_PATH_VAR: str(warehouse),
            settings.LEDGER_START_DATE_VAR: first_day.isoformat(),
            "DAGSTER_HOME": str(run_dir / "dagster_home"),
        }
    )
    (run_dir / "dagster_home").mkdir()
    limit = args.memory_limit or memory.memory_limit_for(memory.total_memory_bytes())
    spill_dir = memory.temp_directory_for(warehouse)

    log = run_dir / "materialize.log"
    returncode, wall, peaks = run_sampled(
        [sys.executable, "-m", "credits_pipeline.cli", "materialize", "--log-level", "WARNING"],
        env,
        log,
        spill_dir,
        args.interval,
    )

    dbt_processes = sum(1 for role in peaks.roles.values() if role == "dbt")
    print(f"users: {args.users:,}   months: {args.months}   exit code: {returncode}")
    print(
        f"DuckDB memory_limit: {limit}   spill directory: {spill_dir} "
        f"(peak {peaks.spill / MB:,.1f} MB)"
    )
    print(f"wall time: {wall:,.1f} s")
    print(f"peak RSS, pipeline process:      {peaks.role_peak('pipeline') / MB:8,.0f} MB")
    print(
        f"peak RSS, largest dbt process:   {peaks.role_peak('dbt') / MB:8,.0f} MB "
        f"({dbt_processes} dbt process(es))"
    )
    print(f"peak RSS, largest other process: {peaks.role_peak('other') / MB:8,.0f} MB")
    print(f"peak RSS, whole process tree:    {peaks.tree / MB:8,.0f} MB")
    largest = max(peaks.by_pid.values(), default=0)
    verdict = "met" if largest < TARGET_PROCESS_BYTES else "MISSED"
    print(f"target every process < {TARGET_PROCESS_BYTES / MB:,.0f} MB: {verdict}")
    print(f"log: {log}")
    if returncode:
        print(log.read_text()[-3000:])
        sys.exit(returncode)


if __name__ == "__main__":
    main()
