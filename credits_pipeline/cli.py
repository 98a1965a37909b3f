"""`credits-pipeline`: the commands a data engineer runs from a terminal.

`demo-data` writes a realistic `syllaby_v2` database anywhere SQLAlchemy reaches — never over a
database that already holds contract rows unless `--replace` says so. `materialize` runs the whole
graph through Dagster — every ledger partition the source needs in one run, then everything
downstream — as a run of the `credits_pipeline` code location of `workspace.yaml`, so the UI shows
it on its timeline and can re-execute it, and ends with a summary table: what was built, what was
not and why, rows moved and quarantined, failed checks.

Exit codes: 0 when every step ran, even when checks found anomalies (checks never hide the
report, contract section 4); 1 when a step errored, with its cause printed once; 2 for a usage or
configuration error, one line per problem, before any work.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from credits_pipeline import settings
from credits_pipeline.run_tags import (
    HOST_TAG,
    PID_TAG,
    TRIGGER_CLI,
    TRIGGER_TAG,
    run_process_is_gone,
)

EXIT_OK = 0
EXIT_STEP_FAILED = 1
EXIT_USAGE = 2
PROG = "credits-pipeline"
WORKSPACE_FILE = settings.PROJECT_ROOT / "workspace.yaml"
QUIET_LOG_LEVEL = "CRITICAL"  # Dagster's console logger without --verbose: progress shows instead
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
WIDE_OUTPUT = 200  # columns when stdout is not a terminal (CI logs, pipes): no wrapped names


class UsageProblem(Exception):
    """A usage or configuration error: printed one line per problem, exit code 2."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(
        file=stream, highlight=False, soft_wrap=True, width=None if stream.isatty() else WIDE_OUTPUT
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("credits_pipeline")
    except PackageNotFoundError:
        return "unknown"


app = typer.Typer(
    name=PROG,
    help=__doc__.split("\n\n")[0].split(": ", 1)[1],
    epilog="Examples:  credits-pipeline demo-data --url sqlite:///data/syllaby_demo.sqlite"
    " --anomalies"
    "  ·  CREDITS_SOURCE_URL=demo credits-pipeline materialize  ·  credits-pipeline materialize"
    " --partition 2026-03-01",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


def _version_callback(value: bool) -> None:
    if value:
        print(f"{PROG} {_version()}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Extract, validate, reconcile and model the syllaby_v2 credit ledger (Dagster + dbt)."""


# -- demo-data ------------------------------------------------------------------------------------


@app.command(
    "demo-data",
    epilog="Examples:  credits-pipeline demo-data --url sqlite:///data/syllaby_demo.sqlite"
    " --users 500 --anomalies  ·  credits-pipeline demo-data --url"
    " mysql+pymysql://root@127.0.0.1/syllaby_demo --replace",
)
def demo_data(
    url: Annotated[
        str,
        typer.Option(
            help="SQLAlchemy URL of the database to write, named for the demo, e.g. "
            "sqlite:///data/syllaby_demo.sqlite or mysql+pymysql://root@127.0.0.1/syllaby_demo."
        ),
    ],
    users: Annotated[int, typer.Option(help="Number of users to simulate.", min=1)] = 200,
    seed: Annotated[
        int, typer.Option(help="Random seed: the same arguments give the same database.")
    ] = 7,
    end: Annotated[
        str | None, typer.Option(help="Last day of history, YYYY-MM-DD.", show_default="today, UTC")
    ] = None,
    months: Annotated[int, typer.Option(help="Months of history before --end.", min=1)] = 12,
    anomalies: Annotated[
        bool,
        typer.Option(
            "--anomalies", help="Inject violations of every ledger rule (and a manifest)."
        ),
    ] = False,
    manifest: Annotated[
        Path | None,
        typer.Option(
            help="Where to write the JSON manifest of injected anomalies.",
            show_default="next to a SQLite file, with --anomalies",
        ),
    ] = None,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Drop and rewrite the contract tables even when they hold rows "
            "(says what it drops).",
        ),
    ] = False,
) -> None:
    """Write a realistic, deterministic syllaby_v2 database (refuses a populated one)."""
    import sqlalchemy as sa

    from credits_pipeline.source.demo import TargetNotEmpty, generate

    end_day = _parse_end(end)
    out = _console()
    try:
        summary = generate(
            url,
            users=users,
            seed=seed,
            end=end_day,
            anomalies=anomalies,
            manifest_path=manifest,
            months=months,
            replace=replace,
        )
    except TargetNotEmpty as exc:
        held = ", ".join(f"{table} {n:,}" for table, n in exc.counts.items())
        raise UsageProblem(
            [
                f"refused: {settings.redact_url(url)} already holds contract tables with rows "
                f"({held}); "
                "demo-data would drop them — point --url at a database named for the demo, or pass "
                "--replace to drop and rewrite them"
            ]
        ) from None
    except sa.exc.ArgumentError:
        raise UsageProblem(
            [f"--url {settings.redact_url(url)} is not a valid SQLAlchemy URL"]
        ) from None
    except sa.exc.SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        _console(stderr=True).print(
            f"{PROG}: writing the demo to {settings.redact_url(url)} failed: {first}", markup=False
        )
        raise typer.Exit(EXIT_STEP_FAILED) from None
    except ValueError as exc:
        raise UsageProblem([str(exc)]) from None
    if summary.replaced:
        dropped = ", ".join(f"{table} ({n:,} rows)" for table, n in summary.replaced.items())
        out.print(f"replaced (--replace): dropped {dropped}")
    counts = ", ".join(f"{table} {n}" for table, n in summary.counts.items())
    out.print(
        f"demo data written to {settings.redact_url(url)} in {summary.seconds:.1f} s: {counts}"
    )
    if summary.manifest_path:
        out.print(f"manifest of injected anomalies: {summary.manifest_path}")


def _parse_end(end: str | None) -> dt.date | None:
    if end is None:
        return None
    try:
        return dt.date.fromisoformat(end)
    except ValueError:
        raise UsageProblem([f"--end {end!r} is not valid: a day YYYY-MM-DD"]) from None


# -- materialize ----------------------------------------------------------------------------------


@app.command(
    "materialize",
    epilog="Examples:  CREDITS_SOURCE_URL=demo credits-pipeline materialize  ·  credits-pipeline"
    " materialize --partition 2026-03-01  ·  credits-pipeline materialize --verbose"
    " --log-level DEBUG",
)
def materialize(
    partition: Annotated[
        str | None,
        typer.Option(
            help="Only this ledger partition (YYYY-MM-DD, a closed UTC day).",
            show_default="every partition the source needs, in one run",
        ),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Show Dagster's raw log lines instead of progress."),
    ] = False,
    log_level: Annotated[
        str,
        typer.Option(help=f"Level of Dagster's log lines with --verbose: {', '.join(LOG_LEVELS)}."),
    ] = "INFO",
    full_refresh: Annotated[
        bool,
        typer.Option(
            "--full-refresh",
            help="Extract every ledger partition again and rebuild dbt's incremental models from "
            "the whole ledger, instead of catching up from what the warehouse holds.",
        ),
    ] = False,
) -> None:
    """Materialize every asset with Dagster, then print a summary (source: CREDITS_SOURCE_URL)."""
    problems = settings.configuration_problems()
    if log_level.upper() not in LOG_LEVELS:
        problems.append(f"--log-level {log_level!r} is not valid: one of {', '.join(LOG_LEVELS)}")
    if partition and full_refresh:
        problems.append("--partition and --full-refresh exclude each other: choose one")
    if problems:
        raise UsageProblem(problems)
    code = _materialize(partition, verbose, log_level.upper(), full_refresh)
    raise typer.Exit(code)


def _default_dagster_home() -> Path:
    """`DAGSTER_HOME`, or a persistent instance under the data directory, so runs show in the UI."""
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


def _window(partition: str | None, full_refresh: bool = False) -> tuple[str, str] | None:
    """The ledger partitions of the run; a bad --partition is a usage problem (one line).

    Without --partition: a catch-up (extract/catch_up.py) from what the warehouse holds — on an
    empty warehouse every day, on one kept up to date the newest closed day.
    """
    from credits_pipeline.extract.assets import LEDGER_PARTITIONS
    from credits_pipeline.extract.catch_up import catch_up_window

    last = LEDGER_PARTITIONS.get_last_partition_key()
    if partition is not None:
        problem = settings.partition_problem(
            partition, settings.ledger_start_date(), dt.date.fromisoformat(last) if last else None
        )
        if problem:
            raise UsageProblem([problem])
        return partition, partition
    keys = LEDGER_PARTITIONS.get_partition_keys()
    loaded = [] if full_refresh else _loaded_partitions()
    return catch_up_window(keys, loaded, full_refresh=full_refresh)


def _loaded_partitions() -> list[dt.date]:
    """The ledger days the warehouse already holds (none when it does not exist yet)."""
    from credits_pipeline.warehouse.choice import choose_warehouse
    from credits_pipeline.warehouse.raw_tables import loaded_ledger_partitions

    warehouse = choose_warehouse().process_config_and_initialize()
    with warehouse.session_if_exists() as con:  # closed before the run opens the warehouse
        return [] if con is None else loaded_ledger_partitions(con)


def _materialize(
    partition: str | None, verbose: bool, log_level: str, full_refresh: bool = False
) -> int:
    import dagster as dg
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
        PARTITION_NAME_TAG,
    )

    from credits_pipeline.schedules import DAILY_JOB_NAME
    from credits_pipeline.transform.assets import DBT_OPS

    window = _window(partition, full_refresh)
    _default_dagster_home()
    out = _console()
    instance = dg.DagsterInstance.get()
    for line in mark_interrupted_runs_failed(instance):
        out.print(line)

    run_tags = {
        TRIGGER_TAG: TRIGGER_CLI,
        PID_TAG: str(os.getpid()),
        HOST_TAG: socket.gethostname(),
    }
    tags = dict(run_tags)
    if partition:
        tags[PARTITION_NAME_TAG] = partition
    elif window:
        tags[ASSET_PARTITION_RANGE_START_TAG], tags[ASSET_PARTITION_RANGE_END_TAG] = window
    source = settings.redact_url(settings.source_url())
    from credits_pipeline.warehouse.choice import choose_warehouse

    warehouse = choose_warehouse().process_config_and_initialize().describe()
    span = (
        f"ledger partitions {window[0]} .. {window[1]}"
        if window
        else "no closed ledger partition yet"
    )
    if window and not partition:
        span += " (full refresh)" if full_refresh else " (catch-up: the days the warehouse lacks)"
    out.print(
        f"materializing every asset of {DAILY_JOB_NAME}: {span} in one run; source {source}; "
        f"warehouse {warehouse}"
    )
    level = log_level if verbose else QUIET_LOG_LEVEL
    run_config: dict = {"loggers": {"console": {"config": {"log_level": level}}}}
    out.print(observe_source(instance, run_config, run_tags))
    if full_refresh:  # the observation job has no dbt step: only the daily run is configured
        run_config = {
            **run_config,
            "ops": {op: {"config": {"full_refresh": True}} for op in DBT_OPS},
        }
    launched = launch_in_code_location(instance, DAILY_JOB_NAME, run_config, tags)
    progress = Progress(out, launched.plan, show=not verbose)
    events = list(progress.follow(launched.events()))
    return report(instance, launched.run_id, events, launched.plan)


def observe_source(instance, run_config: dict, tags: dict) -> str:
    """Observe `syllaby_v2` in a run of its own before materializing; one line saying what it saw.

    The source tables then show their row counts and newest rows in the UI next to the raw tables
    this run extracts (extract/observe.py says why it is a job of its own). A failed observation
    never stops the materialization: the extraction reads the source itself and reports the cause,
    once, in the summary; this line only says that observing failed.
    """
    import dagster as dg

    from credits_pipeline.extract.observe import OBSERVE_JOB_NAME, ROW_COUNT_METADATA
    from credits_pipeline.source.tables import CREDIT_HISTORIES

    launched = launch_in_code_location(instance, OBSERVE_JOB_NAME, run_config, tags)
    rows: dict[str, int] = {}
    failed = False
    for event in launched.events():
        if event.event_type == dg.DagsterEventType.ASSET_OBSERVATION:
            observation = event.event_specific_data.asset_observation
            count = observation.metadata.get(ROW_COUNT_METADATA)
            if count is not None:
                rows[observation.asset_key.path[-1]] = int(count.value)
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            failed = True
    if failed:
        return (
            f"observing syllaby_v2 failed (run {launched.run_id}); materializing anyway, the "
            "extraction reports the cause"
        )
    ledger = rows.get(CREDIT_HISTORIES.name)
    ledger_part = f", {ledger:,} ledger rows" if ledger is not None else ""
    return f"observed syllaby_v2: {len(rows)} tables{ledger_part} (run {launched.run_id})"


@dataclass
class LaunchedRun:
    run_id: str
    plan: object  # run_summary.PlanShape
    events: Callable[[], Iterator[Any]]  # yields DagsterEvent


def _workspace_location() -> tuple[str, str]:
    """(module, location name) of the code location `workspace.yaml` declares (one truth)."""
    import yaml

    spec = yaml.safe_load(WORKSPACE_FILE.read_text())
    [entry] = spec["load_from"]
    module = entry["python_module"]
    return module["module_name"], module["location_name"]


def launch_in_code_location(instance, job_name: str, run_config: dict, tags: dict) -> LaunchedRun:
    """Create the run as the UI would (with the code location's origin), then execute it here.

    Why not `job.execute_in_process`: such a run has no code location origin, so the UI's
    timeline does not list it and cannot re-execute it. Loading `workspace.yaml`'s module as an
    in-process code location gives the run a remote job origin under the same location name as the
    webserver's; the steps still execute in this process, streaming their events to the progress
    display.
    """
    from dagster._core.execution.api import execute_run_iterator
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._utils.hosted_user_process import recon_job_from_origin

    from credits_pipeline.definitions import prepare_for_run
    from credits_pipeline.run_summary import PlanShape

    prepare_for_run()
    module, location_name = _workspace_location()
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(
            executable_path=sys.executable,
            module_name=module,
            working_directory=str(settings.PROJECT_ROOT),
        ),
        location_name=location_name,
    )
    location = origin.create_location(instance)
    [repo] = location.get_repositories().values()
    remote_job = repo.get_full_job(job_name)
    plan = location.get_execution_plan(
        remote_job, run_config, step_keys_to_execute=None, known_state=None, instance=instance
    )
    snapshot = plan.execution_plan_snapshot
    run = instance.create_run(
        job_name=job_name,
        run_id=None,
        run_config=run_config,
        resolved_op_selection=None,
        step_keys_to_execute=snapshot.step_keys_to_execute,
        op_selection=None,
        status=None,
        root_run_id=None,
        parent_run_id=None,
        tags={**remote_job.tags, **tags},
        job_snapshot=remote_job.job_snapshot,
        execution_plan_snapshot=snapshot,
        parent_job_snapshot=remote_job.parent_job_snapshot,
        remote_job_origin=remote_job.get_remote_origin(),
        job_code_origin=remote_job.get_python_origin(),
        asset_selection=None,
        asset_check_selection=None,
        asset_graph=repo.asset_graph,
    )
    recon_job = recon_job_from_origin(remote_job.get_python_origin())

    def events():
        try:
            yield from execute_run_iterator(recon_job, run, instance)
        finally:
            location.cleanup()

    return LaunchedRun(run.run_id, PlanShape.from_snapshot(snapshot), events)


def mark_interrupted_runs_failed(instance) -> list[str]:
    """Runs this CLI started whose process is gone (killed) are marked failed; one line each."""
    import dagster as dg

    host = socket.gethostname()
    unfinished = [
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.NOT_STARTED,
    ]
    lines = []
    for run in instance.get_runs(
        filters=dg.RunsFilter(statuses=unfinished, tags={TRIGGER_TAG: TRIGGER_CLI})
    ):
        if run_process_is_gone(run.tags, host):
            message = (
                f"its process {run.tags.get(PID_TAG)} on {host} ended without finishing the run "
                "(killed or crashed); marked failed by the next credits-pipeline start"
            )
            instance.report_run_failed(run, message=message)
            lines.append(f"run {run.run_id} was interrupted ({run.status.value}): {message}")
    return lines


class _Discard(io.TextIOBase):
    """A text stream that keeps nothing (dbt's lines are in the run's logs already)."""

    def write(self, text: str) -> int:
        return len(text)


class Progress:
    """One line per finished step (assets, rows, seconds) and a spinner while a step runs."""

    def __init__(self, console: Console, plan, show: bool = True) -> None:
        self.console = console
        self.plan = plan
        self.show = show
        self.started: dict[str, float] = {}
        self.rows: dict[str, int] = {}

    def follow(self, events):
        """Show progress while passing every event through."""
        status = self.console.status("starting the run…") if self.show else None
        quiet = contextlib.redirect_stdout(_Discard()) if self.show else contextlib.nullcontext()
        if status is not None:
            status.start()
        seen_assets: set[str] = set()
        try:
            # without --verbose, what steps print (dbt's own log lines) stays in the run's logs
            with quiet:
                yield from self._follow(events, status, seen_assets)
        finally:
            if status is not None:
                status.stop()

    def _follow(self, events, status, seen_assets):
        import dagster as dg

        from credits_pipeline.extract.common import ROWS_LOADED_METADATA
        from credits_pipeline.run_summary import counts_again

        for event in events:
            kind = event.event_type
            if kind == dg.DagsterEventType.STEP_START:
                self.started[event.step_key] = time.perf_counter()
                if status is not None:
                    status.update(f"running {event.step_key}…")
            elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
                mat = event.event_specific_data.materialization
                loaded = mat.metadata.get(ROWS_LOADED_METADATA)
                if counts_again(seen_assets, mat) and loaded is not None:
                    self.rows[event.step_key] = self.rows.get(event.step_key, 0) + int(loaded.value)
            elif self.show and kind in (
                dg.DagsterEventType.STEP_SUCCESS,
                dg.DagsterEventType.STEP_FAILURE,
            ):
                self._finished(event.step_key, kind == dg.DagsterEventType.STEP_SUCCESS)
            yield event

    def _finished(self, step: str, ok: bool) -> None:
        seconds = time.perf_counter() - self.started.get(step, time.perf_counter())
        assets = ", ".join(self.plan.step_assets.get(step, ())) or f"{step} (checks)"
        if len(assets) > 70:
            assets = f"{step} ({len(self.plan.step_assets.get(step, ()))} assets)"
        rows = f"{self.rows[step]:,} rows" if step in self.rows else ""
        mark = "[green]✓[/]" if ok else "[red]✗[/]"
        self.console.print(f"  {mark} {assets:<70} {rows:>14} {seconds:7.1f} s")


def report(instance, run_id: str, events: list, plan) -> int:
    """Print the summary, tag the run with its failed check counts, return the exit code."""
    from credits_pipeline.run_summary import ERROR, WARN, failed_check_tags, summarize

    summary = summarize(events, plan, failure_message)
    instance.add_run_tags(run_id, failed_check_tags(summary.failed_checks))
    out = _console()
    link = f"{settings.ui_base_url()}/runs/{run_id}"
    out.print(f"\n=== {PROG} materialize: summary ===")
    out.print(f"run id: {run_id}  (open it in the UI: {link})")
    out.print(f"assets materialized: {len(summary.materialized)}")
    out.print(f"rows moved into raw: {summary.rows_moved}")
    out.print(_assets_table(summary, plan))
    errors, warns = summary.failed_check_count(ERROR), summary.failed_check_count(WARN)
    if summary.failed_checks:
        out.print(f"checks failed: {len(summary.failed_checks)} ({errors} ERROR, {warns} WARN)")
        out.print(_checks_table(summary))
    else:
        out.print("checks failed: 0")
    if summary.no_alert_channel:  # failing rules that reach nobody: said loudly, not buried
        out.print(f"[bold red]{summary.no_alert_channel}[/]")
    if summary.blocked_by_checks:
        out.print(
            f"held back by blocking ERROR checks ({settings.BLOCK_REVENUE_ON_ERROR_VAR}): "
            f"everything downstream of {', '.join(summary.blocked_by_checks)}"
        )
    if summary.failures:
        err = _console(stderr=True)
        err.print("\nFAILED: a step errored; the warehouse keeps its previous state for that step:")
        hints: list[str] = []
        for message, failures in summary.failures_by_cause():
            where = "; ".join(f"{', '.join(f.assets) or f.step} (step {f.step})" for f in failures)
            err.print(f"  - {where}: {message}", markup=False)
            hint = what_to_do(message)
            if hint not in hints:
                hints.append(hint)
        for hint in hints:
            err.print(f"what to do: {hint}", markup=False)
        err.print(f"the run in the UI: {link}", markup=False)
        return EXIT_STEP_FAILED
    return EXIT_OK


def _assets_table(summary, plan) -> Table:
    table = Table(title="assets", title_justify="left", show_lines=False)
    table.add_column("asset", no_wrap=True)
    table.add_column("status", overflow="fold", ratio=1)
    table.add_column("rows loaded", justify="right", no_wrap=True, min_width=11)
    table.add_column("quarantined", justify="right", no_wrap=True, min_width=11)
    table.add_column("quarantine relation", no_wrap=True)
    failed_assets = {a for f in summary.failures for a in f.assets}
    for _step, assets in plan.step_assets.items():
        for asset in assets:
            if asset in failed_assets:
                status = "[red]FAILED[/] (cause below)"
            elif asset in summary.not_built:
                status = f"[yellow]not built[/] — {summary.not_built[asset]}"
            else:
                status = "[green]materialized[/]"
            rows = summary.rows_loaded.get(asset)
            quarantined, relation = summary.quarantined.get(asset, (None, ""))
            table.add_row(
                asset,
                status,
                f"{rows:,}" if rows is not None else "",
                f"{quarantined:,}" if quarantined is not None else "",
                relation if quarantined else "",
            )
    return table


def _checks_table(summary) -> Table:
    table = Table(show_lines=False)
    table.add_column("failed check", no_wrap=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("what it found", overflow="ellipsis", no_wrap=True, max_width=90)
    for check in sorted(summary.failed_checks, key=lambda c: (c.severity != "ERROR", c.name)):
        table.add_row(check.name, check.severity, check.description)
    return table


def what_to_do(message: str) -> str:
    """The next step for a failure's cause: fix the source, the configuration, or read the log."""
    if "cannot connect to the source database" in message:
        return f"check {settings.SOURCE_URL_VAR} and that the database server is reachable; re-run."
    if message.startswith("syllaby_v2."):
        return "fix the source table named above (or the contract), then re-run."
    return "re-run with --verbose for Dagster's full log, or open the run in the UI."


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


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (usage and configuration problems: 2, one line each)."""
    import warnings

    from typer._click.exceptions import NoArgsIsHelpError

    # Dagster flags beta parameters on every import; a terminal user cannot act on that.
    warnings.filterwarnings("ignore", message=r".*(beta|preview).*", category=Warning)
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        result = typer.main.get_command(app).main(args=args, prog_name=PROG, standalone_mode=False)
    except UsageProblem as exc:
        for problem in exc.problems:
            print(f"{PROG}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except settings.ConfigurationError as exc:
        for problem in exc.problems:
            print(f"{PROG}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print(f"{PROG}: aborted", file=sys.stderr)
        return EXIT_STEP_FAILED
    except NoArgsIsHelpError as exc:
        print(exc.format_message())
        return EXIT_USAGE
    except typer.TyperException as exc:  # click's usage errors: one line, no traceback
        message = " ".join(exc.format_message().split())
        print(f"{PROG}: {message} (see {PROG} --help)", file=sys.stderr)
        return EXIT_USAGE
    return result if isinstance(result, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
