"""Benchmark (issue 10): the fixed cost of a run, what `credits-pipeline materialize` costs when
there is nothing new to read, and where it goes.

Why it exists: issue 10's targets for the daily run are relative. A daily run must take at most
10 % of the full run's wall time, and the full run at most 6 times the `mariadb --quick --batch`
dump of the ledger (`bench/end_to_end.py` measures both). If both held, a daily run would have
0.6 times the dump for everything: at 100,000 users, a dump of 7.8 s leaves it 4.7 s. A run with
nothing to read still imports the code location, plans and records a Dagster run, starts three
dbt processes that parse the project and build and test every model, and records every event.
This script measures that floor, so that the ceiling can be compared with it.

On a tiny embedded source (`credits-pipeline demo-data`, SQLite, `--users` users, default 40), in
a temporary directory, it runs:

1. `import credits_pipeline.definitions` in a new interpreter: the code location's import;
2. `dbt --version` in a new process: the least a dbt process costs before it reads the project;
3. a first full `materialize`, then `--repeat` more on the same warehouse, each with nothing new.

For each no-op run it takes the wall time and, from the Dagster instance, each step's duration.
For the three dbt steps it also reads what dbt itself says: its `run_results.json` (the nodes'
elapsed time) and its `dbt.log` (the time from its first log line to "Command ... succeeded").
It prints medians, the machine's load with each figure, and the ceiling the targets leave a daily
run when `--dump-seconds` is given.

    .venv/bin/python bench/fixed_cost.py [--users 40] [--repeat 3] [--dump-seconds 7.8]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

import end_to_end as end_to_end_bench  # noqa: E402 - bench/ is not a package: shared by path
import memory as memory_bench  # noqa: E402

DEFAULT_USERS = 40
DEFAULT_REPEAT = 3
# issue 10's targets, spelled once in bench/end_to_end.py
TARGET_FULL_VS_DUMP = end_to_end_bench.TARGET_FULL_VS_DUMP
TARGET_DAILY_VS_FULL = end_to_end_bench.TARGET_DAILY_VS_FULL
load = end_to_end_bench.load
DBT_STEP_PREFIX = "dbt_"


def timed(command: list[str], env: dict[str, str], log: Path | None = None) -> float:
    """Wall seconds of one command; its output goes to `log` (or nowhere). Fails loudly."""
    started = time.monotonic()
    with open(log or os.devnull, "w") as out:
        subprocess.run(command, env=env, check=True, stdout=out, stderr=subprocess.STDOUT)
    return time.monotonic() - started


def steps_of_latest_run(home: Path) -> tuple[str, dict[str, float]]:
    """(run id, step key -> seconds) of the newest run of the daily job in `home`."""
    import dagster as dg

    from credits_pipeline.schedules import DAILY_JOB_NAME

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        [run] = instance.get_runs(filters=dg.RunsFilter(job_name=DAILY_JOB_NAME), limit=1)
        stats = instance.get_run_step_stats(run.run_id)
        return run.run_id, {
            s.step_key: s.end_time - s.start_time for s in stats if s.start_time and s.end_time
        }
    finally:
        instance.dispose()


def _log_span(log: Path) -> float:
    """Seconds from dbt's first structured log line to its last (its work once started)."""
    stamps = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            stamps.append(dt.datetime.fromisoformat(json.loads(line)["info"]["ts"]))
    return (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else 0.0


def dbt_own_times(run_id: str) -> dict[str, tuple[float, float]]:
    """dbt step name -> (dbt's logged span, its nodes' elapsed) for the invocations of `run_id`.

    `transform/dbt_project.seeded_target_path` names each invocation's target directory
    `<step>-<run id[:7]>-<suffix>` under the project's target path for the profile.
    """
    from credits_pipeline.transform.dbt_project import dbt_project_for

    project = dbt_project_for("duckdb")
    target_root = Path(project.project_dir) / project.target_path
    found: dict[str, tuple[float, float]] = {}
    for target in target_root.glob(f"*-{run_id[:7]}-*"):
        results, log = target / "run_results.json", target / "dbt.log"
        if results.exists() and log.exists():
            step = target.name.rsplit("-", 2)[0]
            found[step] = (_log_span(log), json.loads(results.read_text())["elapsed_time"])
    return found


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=DEFAULT_USERS)
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT)
    parser.add_argument(
        "--dump-seconds",
        type=float,
        default=None,
        help="the ledger dump's time from bench/end_to_end.py: prints the ceiling it sets",
    )
    args = parser.parse_args()

    from credits_pipeline import settings

    work = Path(tempfile.mkdtemp(prefix="credits_bench_fixed_cost_"))
    home = work / "dagster_home"
    home.mkdir()
    source = work / "source.sqlite"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONWARNINGS": "ignore",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DAGSTER_DISABLE_TELEMETRY": "yes",
        "DAGSTER_HOME": str(home),
        settings.SOURCE_URL_VAR: f"sqlite:///{source}",
        settings.WAREHOUSE_PATH_VAR: str(work / "warehouse.duckdb"),
        settings.DATA_DIR_VAR: str(work),
    }
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    print(f"started {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC ({load()}); work: {work}")
    subprocess.run(
        memory_bench.demo_data_command(
            f"sqlite:///{source}", args.users, 12, "--end", yesterday.isoformat()
        ),
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )

    python = sys.executable
    dbt = str(Path(python).with_name("dbt"))
    imports = [
        timed([python, "-c", "import credits_pipeline.definitions"], env)
        for _ in range(args.repeat)
    ]
    print(f"import the code location:  median {median(imports):5.2f} s  ({load()})")
    dbt_starts = [timed([dbt, "--version"], env) for _ in range(args.repeat)]
    print(f"start dbt (dbt --version): median {median(dbt_starts):5.2f} s  ({load()})")

    materialize = [python, "-m", "credits_pipeline.cli", "materialize", "--log-level", "WARNING"]
    first = timed(materialize, env, work / "first.log")
    print(f"first full run ({args.users} users): {first:5.1f} s  ({load()})")

    walls: list[float] = []
    step_totals: dict[str, list[float]] = {}
    dbt_spans: dict[str, list[float]] = {}
    dbt_nodes: dict[str, list[float]] = {}
    for attempt in range(args.repeat):
        walls.append(timed(materialize, env, work / f"noop_{attempt}.log"))
        run_id, steps = steps_of_latest_run(home)
        for step, seconds in steps.items():
            step_totals.setdefault(step, []).append(seconds)
        for step, (span, nodes) in dbt_own_times(run_id).items():
            dbt_spans.setdefault(step, []).append(span)
            dbt_nodes.setdefault(step, []).append(nodes)
    print(f"no-op run (nothing new):   median {median(walls):5.1f} s  ({load()})")
    steps_sum = sum(median(v) for v in step_totals.values())
    print(f"  the steps, summed:       median {steps_sum:5.1f} s (the rest: start, plan, report)")
    dbt_steps = sorted(s for s in step_totals if s.startswith(DBT_STEP_PREFIX))
    for step in dbt_steps:
        print(
            f"  {step:20s} step {median(step_totals[step]):5.1f} s, dbt's log "
            f"{median(dbt_spans.get(step, [])):5.1f} s, its nodes "
            f"{median(dbt_nodes.get(step, [])):5.1f} s"
        )
    others = sorted(
        ((median(v), s) for s, v in step_totals.items() if s not in dbt_steps), reverse=True
    )
    print("  other steps: " + ", ".join(f"{s} {v:.1f} s" for v, s in others[:5]))
    if args.dump_seconds:
        ceiling = args.dump_seconds * TARGET_FULL_VS_DUMP * TARGET_DAILY_VS_FULL
        print(
            f"a dump of {args.dump_seconds:.1f} s: a full run within {TARGET_FULL_VS_DUMP:g}x "
            f"takes at most {args.dump_seconds * TARGET_FULL_VS_DUMP:.1f} s, so a daily run "
            f"within {TARGET_DAILY_VS_FULL:.0%} of it at most {ceiling:.1f} s; the no-op run "
            f"above is {median(walls) / ceiling:.1f}x that"
        )


if __name__ == "__main__":
    main()
