"""`credits-pipeline`: the commands a data engineer runs from a terminal.

`demo-data` writes a realistic `syllaby_v2` database anywhere SQLAlchemy reaches; `materialize`
runs the whole graph through Dagster — every ledger partition the source needs in one run, then
everything downstream — recording the run in the instance at `DAGSTER_HOME` so the UI shows it, and
ends with a summary. It exits 0 when every asset materialized, even when checks found anomalies
(checks never hide the report, contract section 4), and 1 with the step's own message when a step
errors.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections import Counter
from pathlib import Path

from credits_pipeline import settings

EXIT_OK = 0
EXIT_STEP_FAILED = 1
EXIT_USAGE = 2


def _default_dagster_home() -> Path:
    """Use `DAGSTER_HOME`, or a persistent instance under the data directory, so runs show in the UI."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(settings.data_dir() / "dagster_home")
        os.environ["DAGSTER_HOME"] = home
    path = Path(home)
    path.mkdir(parents=True, exist_ok=True)
    config = path / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    return path


def cmd_demo_data(args: argparse.Namespace) -> int:
    from credits_pipeline.source.demo import generate

    end = dt.date.fromisoformat(args.end) if args.end else None
    summary = generate(
        args.url,
        users=args.users,
        seed=args.seed,
        end=end,
        anomalies=args.anomalies,
        manifest_path=args.manifest,
        months=args.months,
    )
    counts = ", ".join(f"{table} {n}" for table, n in summary.counts.items())
    print(f"demo data written to {settings.redact_url(args.url)} in {summary.seconds:.1f} s: {counts}")
    if summary.manifest_path:
        print(f"manifest of injected anomalies: {summary.manifest_path}")
    return EXIT_OK


def _partition_range() -> tuple[str, str] | None:
    from credits_pipeline.extract.assets import LEDGER_PARTITIONS

    last = LEDGER_PARTITIONS.get_last_partition_key()
    if last is None:
        return None
    return LEDGER_PARTITIONS.get_first_partition_key(), last


def cmd_materialize(args: argparse.Namespace) -> int:
    import dagster as dg
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    _default_dagster_home()
    from credits_pipeline.definitions import defs, prepare_for_run
    from credits_pipeline.schedules import DAILY_JOB_NAME

    prepare_for_run()
    job = defs.resolve_job_def(DAILY_JOB_NAME)
    tags: dict[str, str] = {"credits/trigger": "cli"}
    window = _partition_range()
    if args.partition:
        tags["dagster/partition"] = args.partition
        window = (args.partition, args.partition)
    elif window:
        tags[ASSET_PARTITION_RANGE_START_TAG], tags[ASSET_PARTITION_RANGE_END_TAG] = window
    print(
        f"materializing every asset of {DAILY_JOB_NAME}: ledger partitions {window[0]} .. {window[1]} "
        f"in one run; source {settings.redact_url(settings.source_url())}; "
        f"warehouse {settings.warehouse_path() if settings.warehouse_kind() == 'duckdb' else 'bigquery'}",
        flush=True,
    )
    instance = dg.DagsterInstance.get()
    result = job.execute_in_process(
        instance=instance,
        tags=tags,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": args.log_level}}}},
    )
    return _report(result)


def _report(result) -> int:
    """Print what moved, which checks failed, and return the exit code."""
    import dagster as dg

    materialized: list[str] = []
    rows_moved = 0
    failed_checks: list[str] = []
    severities: Counter = Counter()
    step_failures: list[str] = []
    blocked_by_checks: list[str] = []
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            mat = event.event_specific_data.materialization
            key = mat.asset_key.to_user_string()
            loaded = mat.metadata.get("rows_loaded")
            # a ranged run records one materialization per partition, all with the run's totals
            if loaded is not None and key not in materialized:
                rows_moved += int(loaded.value)
            materialized.append(key)
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            if not evaluation.passed:
                name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
                severity = evaluation.severity.value if evaluation.severity else "ERROR"
                failed_checks.append(f"{name} ({severity})")
                severities[severity] += 1
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            if _is_blocking_check_failure(event):
                # the step's assets materialized; its ERROR checks held back what is downstream
                blocked_by_checks.append(event.step_key)
            else:
                step_failures.append(f"{event.step_key}: {failure_message(event)}")
    print("\n=== credits-pipeline materialize: summary ===")
    print(f"run id: {result.run_id}  (open it in the UI: {settings.ui_base_url()}/runs/{result.run_id})")
    print(f"assets materialized: {len(set(materialized))}")
    print(f"rows moved into raw: {rows_moved}")
    if failed_checks:
        print(f"checks failed: {len(failed_checks)} ({', '.join(f'{v} {k}' for k, v in sorted(severities.items()))})")
        for name in failed_checks:
            print(f"  - {name}")
    else:
        print("checks failed: 0")
    if blocked_by_checks:
        print(
            f"held back by blocking ERROR checks ({settings.BLOCK_REVENUE_ON_ERROR_VAR}): "
            f"everything downstream of {', '.join(blocked_by_checks)}"
        )
    if step_failures:
        print("\nFAILED: a step errored, the warehouse keeps its previous state for that step:", file=sys.stderr)
        for failure in step_failures:
            print(f"  - {failure}", file=sys.stderr)
        return EXIT_STEP_FAILED
    return EXIT_OK


def _is_blocking_check_failure(event) -> bool:
    """A step that failed only because blocking checks failed: its assets did materialize."""
    error = event.event_specific_data.error
    return error is not None and error.cls_name == "DagsterAssetCheckFailedError"


def failure_message(event) -> str:
    """A failed step's message: a `dg.Failure`'s own description, else the innermost error."""
    data = event.event_specific_data
    user_failure = getattr(data, "user_failure_data", None)
    if user_failure is not None and user_failure.description:
        return user_failure.description
    return _root_message(data.error) if data.error else event.message


def _root_message(error) -> str:
    """The innermost message of a serialized error: the cause a human needs, without traceback."""
    messages = []
    while error is not None:
        messages.append(error.message.strip().splitlines()[-1] if error.message.strip() else "")
        error = error.cause
    useful = [m for m in messages if m]
    return useful[-1] if useful else "unknown error"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="credits-pipeline", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo-data", help="write a realistic, deterministic syllaby_v2 database")
    demo.add_argument("--url", required=True, help="SQLAlchemy URL, e.g. sqlite:///data/demo.sqlite")
    demo.add_argument("--users", type=int, default=200)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--end", help="last day of history, YYYY-MM-DD (default: today, UTC)")
    demo.add_argument("--months", type=int, default=12, help="months of history before --end")
    demo.add_argument("--anomalies", action="store_true", help="inject violations of every ledger rule")
    demo.add_argument("--manifest", help="where to write the manifest of injected anomalies (JSON)")
    demo.set_defaults(func=cmd_demo_data)

    mat = sub.add_parser("materialize", help="materialize every asset through Dagster")
    mat.add_argument("--partition", help="only this ledger partition (YYYY-MM-DD) instead of all")
    mat.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    mat.set_defaults(func=cmd_materialize)
    return parser


def main(argv: list[str] | None = None) -> int:
    import warnings

    # Dagster flags beta parameters on every import; a terminal user cannot act on that.
    warnings.filterwarnings("ignore", message=r".*(beta|preview).*", category=Warning)
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
