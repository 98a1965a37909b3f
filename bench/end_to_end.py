"""Benchmark (issue 10): a full `credits-pipeline materialize` and the next day's run, end to end,
on a MariaDB source of N demo users, against the `mariadb --quick --batch` dump of the ledger.

The source is built once with the demo generator (`credits-pipeline demo-data`, history ending the
day before yesterday, UTC) in the database `bench_end_to_end_<users>u_<months>m` on
127.0.0.1:3306 and kept between runs; `--rebuild` regenerates it, and so does a new UTC day (the
ledger's daily partitions follow the clock, so the appended day must be yesterday). A sibling
database `<name>_state` remembers the generated highest ledger id and the row rewritten in place,
so every run first puts the source back as generated. One run then:

1. dumps `credit_histories` with `mariadb --quick --batch` to /dev/null, the SELECT the pipeline
   sends (the floor; bench/extract.py's `client_dump`);
2. runs the full `materialize` (the real CLI, a subprocess, into a fresh DuckDB warehouse and
   DAGSTER_HOME in a temp directory, `CREDITS_SOURCE_URL` set explicitly), sampling the RSS of the
   pipeline's process and of each dbt subprocess (bench/memory.py's `run_sampled`);
3. appends the next day (yesterday) to the source in one transaction with bound parameters: a copy
   of the last generated day's rows with new ids and timestamps one day later, one late row (a copy
   of an older closed day's row, id above the high-water mark, its old `created_at`) and one old
   row rewritten in place (its `amount` changed);
4. runs the daily run three times from the same warehouse state (copies are taken after step 2):
   as a catch-up `materialize`, as the schedule's `materialize --partition <yesterday>` (both
   ordinary runs: the cut re-checks the last `CREDITS_LEDGER_RECHECK_DAYS` closed days and reads
   the source by id), and as a catch-up that is a full check (`CREDITS_LEDGER_FULL_CHECK_DAYS=0`:
   every closed day compared, the source's ledger scanned once), the cost an ordinary day avoids;
   after each, whether the warehouse holds the late row and the rewritten row's new amount (an
   ordinary run leaves a rewrite older than the re-checked days to the next full check).

Rows read from the ledger by a run are counted from what the run itself records: the extraction
metadata of `raw/credit_histories` (`range_rows_loaded + range_rows_quarantined`, the rows its
partition range fetched from the source) plus `rows_read` of `raw/credit_histories__open` (the
consistent cut: on MariaDB its one read of the re-checked days, the open day and the late rows,
which it fingerprints as they stream; plus `rows_read_before_fallback`, a read it threw away). As
a second, independent count, MariaDB's `information_schema.TABLE_STATISTICS.ROWS_READ` of the
bench's `credit_histories` (the server's own count of rows its handlers read, which also includes
the rows the closed-day fingerprint aggregates scan but never send) is taken before and after each
run; it needs `userstat`, which the bench turns on for its duration and then restores. Every
CLI `materialize` first observes the source (`extract/observe.py`: an exact `count(*)` of each
table, a job of its own, scheduled at 02:50 in production); the bench measures that statement's
rows alone once and also prints each daily run's server count without it. Stage
times are the run's step durations from the Dagster instance. RSS sampling can miss a peak shorter
than the interval: the peaks are a floor.

Targets (issue 10): full run <= 6x the dump, every process < 2 GB; ledger extraction alone (the
`raw/credit_histories` step) <= 2x the dump; each daily run <= 10% of the full run's wall time and
reading at most 3x the day's ledger rows plus one row per user active that day.

    .venv/bin/python bench/end_to_end.py [--users 100000] [--months 12] [--rebuild] [--keep]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

import extract as extract_bench  # noqa: E402 - bench/ is not a package: its scripts share by path
import memory as memory_bench  # noqa: E402

DEFAULT_USERS = 100_000
DEFAULT_MONTHS = 12
DEFAULT_INTERVAL = 0.2
HOST, PORT, USER = extract_bench.HOST, extract_bench.PORT, extract_bench.USER
LEDGER = "credit_histories"
MB = memory_bench.MB
TARGET_FULL_VS_DUMP = 6.0
TARGET_EXTRACT_VS_DUMP = 2.0
TARGET_DAILY_VS_FULL = 0.10
TARGET_ROWS_PER_DAY_ROW = 3
TIMESTAMP_COLUMNS = ("created_at", "updated_at")  # shifted one day in the appended copy
LATE_ROW_DAYS_BACK = 30  # the late row belongs to this many days before the appended day
REWRITTEN_ROW_DAYS_BACK = 60  # the row rewritten in place, this many days back


def server_url(database: str = "") -> str:
    # root with an empty password on the local server; credentials only ever travel in the URL
    return f"mysql+pymysql://{USER}@{HOST}:{PORT}/{database}"


def engine_for(database: str = ""):
    import sqlalchemy as sa

    return sa.create_engine(
        server_url(database), connect_args={"init_command": "SET time_zone = '+00:00'"}
    )


def load() -> str:
    return f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)"


# -- the source, kept between runs ----------------------------------------------------------------


@dataclass
class SourceState:
    database: str
    base_max_id: int
    last_day: dt.date  # the last generated day: its rows are copied into the next day


def _state_db(database: str) -> str:
    return f"{database}_state"


def _read_state(database: str, users: int) -> SourceState | None:
    import sqlalchemy as sa

    engine = engine_for()
    try:
        with engine.connect() as conn:
            names = {r[0] for r in conn.exec_driver_sql("SHOW DATABASES")}
            if database not in names or _state_db(database) not in names:
                return None
            state = dict(
                conn.execute(
                    sa.text(f"SELECT name, value FROM `{_state_db(database)}`.state")
                ).fetchall()
            )
            held = conn.execute(sa.text(f"SELECT count(*) FROM `{database}`.users")).scalar()
    except sa.exc.SQLAlchemyError:
        return None
    finally:
        engine.dispose()
    if held != users or not {"base_max_id", "last_day"} <= state.keys():
        return None
    last_day = dt.date.fromordinal(int(state["last_day"]))
    return SourceState(database, int(state["base_max_id"]), last_day)


def build_source(database: str, users: int, months: int, env: dict[str, str]) -> SourceState:
    """(Re)generate the demo source ending the day before yesterday; remember its bounds."""
    import sqlalchemy as sa

    engine = engine_for()
    with engine.begin() as conn:
        for name in (database, _state_db(database)):
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
            conn.exec_driver_sql(f"CREATE DATABASE `{name}`")
        conn.exec_driver_sql(
            f"CREATE TABLE `{_state_db(database)}`.state "
            "(name VARCHAR(64) PRIMARY KEY, value BIGINT NOT NULL)"
        )
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    print(
        f"generating the demo source: {users:,} users, {months} months ({load()}) ...", flush=True
    )
    started = time.monotonic()
    subprocess.run(
        # --end is exclusive: the last generated day is the day before
        memory_bench.demo_data_command(
            server_url(database), users, months, "--end", yesterday.isoformat()
        ),
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    print(f"  generated in {time.monotonic() - started:,.0f} s ({load()})", flush=True)
    with engine.begin() as conn:
        max_id, last = conn.execute(
            sa.text(f"SELECT max(id), max(created_at) FROM `{database}`.{LEDGER}")
        ).one()
        conn.execute(
            sa.text(f"INSERT INTO `{_state_db(database)}`.state VALUES (:n, :v)"),
            [
                {"n": "base_max_id", "v": int(max_id)},
                {"n": "last_day", "v": last.date().toordinal()},
            ],
        )
    engine.dispose()
    return SourceState(database, int(max_id), last.date())


def restore_source(state: SourceState) -> None:
    """Put the ledger back as generated: drop appended rows, undo the rewrite (idempotent)."""
    import sqlalchemy as sa

    engine = engine_for(state.database)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DELETE FROM {LEDGER} WHERE id > :base"), {"base": state.base_max_id})
        saved = dict(
            conn.execute(
                sa.text(
                    f"SELECT name, value FROM `{_state_db(state.database)}`.state "
                    "WHERE name IN ('rewritten_id', 'rewritten_amount')"
                )
            ).fetchall()
        )
        if len(saved) == 2:
            conn.execute(
                sa.text(f"UPDATE {LEDGER} SET amount = :amount WHERE id = :id"),
                {"amount": saved["rewritten_amount"], "id": saved["rewritten_id"]},
            )
        conn.execute(
            sa.text(
                f"DELETE FROM `{_state_db(state.database)}`.state "
                "WHERE name IN ('rewritten_id', 'rewritten_amount')"
            )
        )
    engine.dispose()


def _day_bounds(day: dt.date) -> dict:
    start = dt.datetime.combine(day, dt.time())
    return {"start": start, "end": start + dt.timedelta(days=1)}


SETUP_INDEX = "bench_setup_created_at"


def append_next_day(state: SourceState) -> dict:
    """The next day's activity, in one transaction: the last day's rows copied one day later
    with new ids, one late row for an older closed day, one old row's amount rewritten.

    The bench's own lookups filter on `created_at`, which the contract does not index (each took
    minutes at 100k users): an index of the bench's is built for them and dropped before any
    measured run, so the runs see the contract's indexes only."""

    engine = engine_for(state.database)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE INDEX {SETUP_INDEX} ON {LEDGER} (created_at)")
    try:
        return _append(state, engine)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP INDEX {SETUP_INDEX} ON {LEDGER}")
        engine.dispose()


def _append(state: SourceState, engine) -> dict:
    import sqlalchemy as sa

    day = state.last_day + dt.timedelta(days=1)
    with engine.begin() as conn:
        columns = [c["name"] for c in sa.inspect(conn).get_columns(LEDGER)]
        others = [c for c in columns if c != "id"]
        copied = ", ".join(
            f"`{c}` + INTERVAL 1 DAY" if c in TIMESTAMP_COLUMNS else f"`{c}`" for c in others
        )
        names = ", ".join(f"`{c}`" for c in ["id", *others])
        conn.execute(
            sa.text(
                f"INSERT INTO {LEDGER} ({names}) "
                f"SELECT :base + ROW_NUMBER() OVER (ORDER BY id), {copied} FROM {LEDGER} "
                "WHERE created_at >= :start AND created_at < :end"
            ),
            {"base": state.base_max_id, **_day_bounds(state.last_day)},
        )
        day_rows, active_users, top = conn.execute(
            sa.text(
                f"SELECT count(*), count(DISTINCT user_id), max(id) FROM {LEDGER} "
                "WHERE created_at >= :start AND created_at < :end"
            ),
            _day_bounds(day),
        ).one()

        def first_id(days_back: int) -> int:
            return conn.execute(
                sa.text(
                    f"SELECT min(id) FROM {LEDGER} WHERE created_at >= :start AND created_at < :end"
                ),
                _day_bounds(day - dt.timedelta(days=days_back)),
            ).scalar_one()

        late_source = first_id(LATE_ROW_DAYS_BACK)
        late_id = int(top) + 1
        plain = ", ".join(f"`{c}`" for c in others)
        conn.execute(
            sa.text(
                f"INSERT INTO {LEDGER} ({names}) SELECT :id, {plain} FROM {LEDGER} WHERE id = :src"
            ),
            {"id": late_id, "src": late_source},
        )
        rewritten = first_id(REWRITTEN_ROW_DAYS_BACK)
        amount = conn.execute(
            sa.text(f"SELECT amount FROM {LEDGER} WHERE id = :id"), {"id": rewritten}
        ).scalar_one()
        conn.execute(
            sa.text(
                f"INSERT INTO `{_state_db(state.database)}`.state VALUES (:n, :v) "
                "ON DUPLICATE KEY UPDATE value = VALUES(value)"
            ),
            [{"n": "rewritten_id", "v": rewritten}, {"n": "rewritten_amount", "v": amount}],
        )
        conn.execute(
            sa.text(f"UPDATE {LEDGER} SET amount = amount + 1 WHERE id = :id"), {"id": rewritten}
        )
    return {
        "day": day,
        "day_rows": int(day_rows),
        "active_users": int(active_users),
        "late_id": late_id,
        "late_day": day - dt.timedelta(days=LATE_ROW_DAYS_BACK),
        "rewritten_id": rewritten,
        "rewritten_amount": int(amount),
        "rewritten_day": day - dt.timedelta(days=REWRITTEN_ROW_DAYS_BACK),
    }


# -- server-side rows read (MariaDB userstat) -----------------------------------------------------


class ServerRowsRead:
    """ROWS_READ of the bench's ledger in information_schema.TABLE_STATISTICS (needs userstat)."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.engine = engine_for()
        self.restore_to: int | None = None
        try:
            with self.engine.begin() as conn:
                on = int(conn.exec_driver_sql("SELECT @@global.userstat").scalar_one())
                if not on:
                    conn.exec_driver_sql("SET GLOBAL userstat = 1")
                    self.restore_to = 0
            self.available = True
        except Exception as exc:  # no privilege, or not MariaDB: the count is left out
            print(f"server-side rows read unavailable: {type(exc).__name__}")
            self.available = False

    def now(self) -> int | None:
        import sqlalchemy as sa

        if not self.available:
            return None
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.text(
                    "SELECT rows_read FROM information_schema.TABLE_STATISTICS "
                    "WHERE table_schema = :db AND table_name = :t"
                ),
                {"db": self.database, "t": LEDGER},
            ).scalar()
        return int(value or 0)

    def of_observation(self) -> int | None:
        """Rows the server reads for the source observation's exact count of the ledger (the
        statement `extract/observe.py` sends), which every CLI `materialize` runs first."""
        import sqlalchemy as sa

        before = self.now()
        if before is None:
            return None
        with engine_for(self.database).connect() as conn:
            conn.execute(sa.text(f"SELECT count(*), max(`created_at`) FROM `{LEDGER}`")).one()
        after = self.now()
        return None if after is None else after - before

    def close(self) -> None:
        if self.restore_to is not None:
            with self.engine.begin() as conn:
                conn.exec_driver_sql(f"SET GLOBAL userstat = {int(self.restore_to)}")
        self.engine.dispose()


class StatementReads:
    """Rows the server examined per ledger statement of a run, from MariaDB's slow query log.

    With `long_query_time = 0` and `log_output = TABLE`, every statement lands in `mysql.slow_log`
    with its `rows_examined`; statements on the bench's database that name the ledger are grouped
    by their text with numbers and quoted values blanked, so a run's server reads can be told
    apart by statement (the fingerprint aggregates, the reads, the observation's count). The
    server's settings are put back as they were when the bench ends."""

    SETTINGS = ("slow_query_log", "log_output", "long_query_time")

    def __init__(self, database: str) -> None:
        self.database = database
        self.engine = engine_for()
        try:
            with self.engine.connect() as conn:
                self.saved = {
                    name: conn.exec_driver_sql(f"SELECT @@global.{name}").scalar_one()
                    for name in self.SETTINGS
                }
            self.available = True
        except Exception as exc:  # no privilege, or not MariaDB
            print(f"statement reads unavailable: {type(exc).__name__}")
            self.available = False

    def start(self) -> None:
        if not self.available:
            return
        with self.engine.begin() as conn:
            conn.exec_driver_sql("SET GLOBAL slow_query_log = 0")
            conn.exec_driver_sql("TRUNCATE TABLE mysql.slow_log")
            conn.exec_driver_sql("SET GLOBAL log_output = 'TABLE', long_query_time = 0")
            conn.exec_driver_sql("SET GLOBAL slow_query_log = 1")

    def stop(self, into: Path | None = None) -> list[tuple[int, int, str]]:
        """(rows examined, statements, statement shape) per shape, most rows first; `into` gets
        every statement in full with its rows examined."""
        import re

        import sqlalchemy as sa

        if not self.available:
            return []
        with self.engine.begin() as conn:
            conn.exec_driver_sql("SET GLOBAL slow_query_log = 0")
            rows = conn.execute(
                sa.text(
                    "SELECT CONVERT(sql_text USING utf8mb4), rows_examined FROM mysql.slow_log "
                    "WHERE db = :db AND sql_text LIKE :ledger"
                ),
                {"db": self.database, "ledger": f"%{LEDGER}%"},
            ).all()
        if into is not None:
            into.write_text("".join(f"-- rows examined {n}\n{text};\n\n" for text, n in rows))
        shapes: dict[str, list[int]] = {}
        for text, examined in rows:
            shape = re.sub(r"'[^']*'", "'?'", " ".join(str(text).split()))
            shape = re.sub(r"\b\d+\b", "N", shape)
            seen = shapes.setdefault(shape[:150], [0, 0])
            seen[0] += int(examined or 0)
            seen[1] += 1
        return sorted(((r, n, s) for s, (r, n) in shapes.items()), reverse=True)

    def close(self) -> None:
        if not self.available:
            return
        import sqlalchemy as sa

        with self.engine.begin() as conn:
            conn.exec_driver_sql("SET GLOBAL slow_query_log = 0")
            conn.execute(
                sa.text("SET GLOBAL log_output = :o, long_query_time = :t"),
                {"o": self.saved["log_output"], "t": self.saved["long_query_time"]},
            )
            conn.execute(
                sa.text("SET GLOBAL slow_query_log = :on"),
                {"on": int(self.saved["slow_query_log"])},
            )
        self.engine.dispose()


# how the observation's statement reads in the slow log (extract/observe.py::observe_table)
OBSERVATION_SHAPE = f"SELECT count(*), max(created_at) FROM {LEDGER}"
STATEMENTS_SHOWN = 8  # ledger statements listed per daily run, most rows examined first

# -- the runs -------------------------------------------------------------------------------------


@dataclass
class RunFigures:
    label: str
    code: int
    wall: float
    peaks: memory_bench.Peaks
    steps: dict[str, float]  # step key -> seconds
    peak_step: str  # the step running when the pipeline's process reached its peak
    ledger_rows_read: int  # raw/credit_histories' partition range + the consistent cut
    server_rows_read: int | None
    log: Path
    load: str
    found: str = ""  # whether the late row and the rewritten amount reached the warehouse
    # rows the server examined for this run's source observation (`count(*)`), from the slow log
    observation_rows: int | None = None

    @property
    def largest(self) -> int:
        return max(self.peaks.by_pid.values(), default=0)

    def extraction_step(self) -> tuple[str, float]:
        key = next((k for k in self.steps if k.endswith(LEDGER)), "")
        return key, self.steps.get(key, float("nan"))


def run_record(
    home: Path, peak_at: float | None
) -> tuple[dict[str, float], int, str, float | None]:
    """The newest daily run in `home`: its step durations, the ledger rows it read, the step
    that was running at `peak_at` (epoch seconds; the pipeline process's peak) and when that step
    started (epoch seconds)."""
    import dagster as dg

    from credits_pipeline.names import OPEN_LEDGER_TABLE, raw_key
    from credits_pipeline.schedules import DAILY_JOB_NAME

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        [run] = instance.get_runs(filters=dg.RunsFilter(job_name=DAILY_JOB_NAME), limit=1)
        stats = [s for s in instance.get_run_step_stats(run.run_id) if s.start_time and s.end_time]
        steps = {s.step_key: s.end_time - s.start_time for s in stats}
        peak_stats = next(
            (s for s in stats if peak_at is not None and s.start_time <= peak_at <= s.end_time),
            None,
        )
        peak_step = "outside any step" if peak_stats is None else peak_stats.step_key
        peak_step_start = None if peak_stats is None else peak_stats.start_time
        partitions = cut = 0
        for entry in instance.all_logs(
            run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ):
            event = entry.asset_materialization
            meta = {k: v.value for k, v in event.metadata.items()}
            if event.asset_key == raw_key(LEDGER):  # one event per partition, the same totals
                partitions = int(meta["range_rows_loaded"]) + int(meta["range_rows_quarantined"])
            elif event.asset_key == raw_key(OPEN_LEDGER_TABLE):
                # rows a recent check read and threw away before reading otherwise count too
                cut = int(meta["rows_read"]) + int(meta.get("rows_read_before_fallback", 0))
    finally:
        instance.dispose()
    return steps, partitions + cut, peak_step, peak_step_start


def found_in_warehouse(warehouse: Path, day: dict) -> str:
    """Whether the warehouse holds the appended late row, and the rewritten row's new amount."""
    import duckdb

    con = duckdb.connect(str(warehouse), read_only=True)
    try:

        def amount(row_id: int) -> int | None:
            row = con.execute(
                "select amount from raw.credit_histories where id = ? union all "
                "select amount from raw.credit_histories__open where id = ? limit 1",
                [row_id, row_id],
            ).fetchone()
            return None if row is None else int(row[0])

        late = amount(day["late_id"]) is not None
        rewritten = amount(day["rewritten_id"]) == day["rewritten_amount"] + 1
    finally:
        con.close()
    return f"late row {'loaded' if late else 'MISSING'}; rewritten row " + (
        "read again" if rewritten else "not yet read (left to the full check)"
    )


def share_partial_parse(original: Path, copy: Path) -> None:
    """Give a copied warehouse the dbt partial parse its original's runs kept.

    dbt's partial parse is kept per profile, and the warehouse path is part of it
    (`transform/dbt_project.py`'s `partial_parse_cache`). In production each day's run finds the
    one the previous day left on the same path; a copy under another path would make its first
    dbt step parse the whole project again (2.6 s of dbt's own log at 100,000 users), a cost no
    daily run pays.
    """
    from credits_pipeline import settings
    from credits_pipeline.transform.dbt_project import dbt_project_for, partial_parse_cache

    project = dbt_project_for("duckdb")
    kept: list[Path] = []
    saved = os.environ.get(settings.WAREHOUSE_PATH_VAR)
    try:
        for run_dir in (original, copy):
            os.environ[settings.WAREHOUSE_PATH_VAR] = str(run_dir / "warehouse.duckdb")
            kept.append(partial_parse_cache(project))
    finally:
        if saved is None:
            os.environ.pop(settings.WAREHOUSE_PATH_VAR, None)
        else:
            os.environ[settings.WAREHOUSE_PATH_VAR] = saved
    if kept[0].exists():
        kept[1].parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kept[0], kept[1])


def materialize(
    label: str,
    run_dir: Path,
    env: dict,
    extra: list[str],
    rows: ServerRowsRead,
    interval: float,
    statements: StatementReads | None = None,
) -> RunFigures:
    from credits_pipeline.warehouse import memory

    warehouse = run_dir / "warehouse.duckdb"
    run_env = {
        **env,
        "CREDITS_WAREHOUSE_PATH": str(warehouse),
        "DAGSTER_HOME": str(run_dir / "dagster_home"),
    }
    (run_dir / "dagster_home").mkdir(exist_ok=True)
    log = run_dir / f"{label.replace(' ', '_')}.log"
    print(f"{label}: materialize {' '.join(extra)} ({load()}) ...", flush=True)
    before = rows.now()
    if statements is not None:
        statements.start()
    code, wall, peaks = memory_bench.run_sampled(
        [
            sys.executable,
            "-m",
            "credits_pipeline.cli",
            "materialize",
            "--log-level",
            "WARNING",
            *extra,
        ],
        run_env,
        log,
        memory.temp_directory_for(warehouse),
        interval,
    )
    after = rows.now()
    by_statement = [] if statements is None else statements.stop(log.with_suffix(".statements.sql"))
    figures_load = load()
    steps, read, peak_step, peak_step_start = run_record(
        run_dir / "dagster_home", peaks.role_peak_at("pipeline")
    )
    carried = None if peak_step_start is None else peaks.root_rss_at(peak_step_start)
    if carried is not None:  # what the process held when that step began: earlier steps' leftovers
        peak_step += f", which it entered at {carried / MB:,.0f} MB"
    server = None if before is None or after is None else after - before
    print(
        f"  exit {code}, {wall:,.1f} s, {read:,} ledger rows read, peak RSS pipeline "
        f"{peaks.role_peak('pipeline') / MB:,.0f} MB (during {peak_step}), "
        f"dbt {peaks.role_peak('dbt') / MB:,.0f} MB "
        f"({figures_load})",
        flush=True,
    )
    ranked = sorted(steps.items(), key=lambda kv: -kv[1])[:4]
    print("  slowest steps: " + ", ".join(f"{k} {v:,.1f} s" for k, v in ranked), flush=True)
    for examined, count, shape in by_statement[:STATEMENTS_SHOWN]:
        print(f"  server rows {examined:>12,} in {count:>3} statement(s): {shape}", flush=True)
    if code:
        print(log.read_text()[-3000:])
    observed = [n for n, _, shape in by_statement if shape.startswith(OBSERVATION_SHAPE)]
    return RunFigures(
        label,
        code,
        wall,
        peaks,
        steps,
        peak_step,
        read,
        server,
        log,
        figures_load,
        observation_rows=observed[0] if observed else None,
    )


# -- the report -----------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(
    dump: dict,
    full: RunFigures,
    dailies: list[RunFigures],
    day: dict,
    observation_rows: int | None = None,
) -> list[str]:
    rows: list[tuple[str, str, str, str, str]] = []
    rows.append(("client dump of credit_histories", f"{dump['seconds']:,.1f} s", "floor", "", ""))
    ratio = full.wall / dump["seconds"]
    rows.append(
        (
            "full materialize, wall",
            f"{full.wall:,.1f} s",
            f"<= {TARGET_FULL_VS_DUMP:.0f}x dump",
            f"{ratio:.2f}x",
            verdict(ratio <= TARGET_FULL_VS_DUMP),
        )
    )
    step, seconds = full.extraction_step()
    ratio = seconds / dump["seconds"]
    rows.append(
        (
            f"ledger extraction alone ({step})",
            f"{seconds:,.1f} s",
            f"<= {TARGET_EXTRACT_VS_DUMP:.0f}x dump",
            f"{ratio:.2f}x",
            verdict(ratio <= TARGET_EXTRACT_VS_DUMP),
        )
    )
    limit = memory_bench.TARGET_PROCESS_BYTES
    for run in (full, *dailies):
        dbt = sum(1 for r in run.peaks.roles.values() if r == "dbt")
        rows.append(
            (
                f"{run.label}: peak RSS pipeline / largest dbt ({dbt})",
                f"{run.peaks.role_peak('pipeline') / MB:,.0f} / "
                f"{run.peaks.role_peak('dbt') / MB:,.0f} MB",
                f"< {limit / MB:,.0f} MB each",
                f"{run.largest / limit:.2f}x",
                verdict(run.largest < limit),
            )
        )
    allowed = TARGET_ROWS_PER_DAY_ROW * day["day_rows"] + day["active_users"]
    for run in dailies:
        ratio = run.wall / full.wall
        rows.append(
            (
                f"{run.label}: wall",
                f"{run.wall:,.1f} s",
                f"<= {TARGET_DAILY_VS_FULL:.0%} of full",
                f"{ratio:.1%}",
                verdict(ratio <= TARGET_DAILY_VS_FULL),
            )
        )
        rows.append(
            (
                f"{run.label}: ledger rows read (extraction)",
                f"{run.ledger_rows_read:,}",
                f"<= {allowed:,}",
                f"{run.ledger_rows_read / day['day_rows']:.2f}x day",
                verdict(run.ledger_rows_read <= allowed),
            )
        )
        if run.server_rows_read is not None:
            rows.append(
                (
                    f"{run.label}: ledger rows read (server)",
                    f"{run.server_rows_read:,}",
                    f"<= {allowed:,}",
                    f"{run.server_rows_read / day['day_rows']:.2f}x day",
                    verdict(run.server_rows_read <= allowed),
                )
            )
            observed = (
                run.observation_rows if run.observation_rows is not None else observation_rows
            )
            if observed is not None:
                own = run.server_rows_read - observed
                rows.append(
                    (
                        f"{run.label}: ... without the observation's count",
                        f"{own:,}",
                        f"<= {allowed:,}",
                        f"{own / day['day_rows']:.2f}x day",
                        verdict(own <= allowed),
                    )
                )
    width = max(len(r[0]) for r in rows)
    lines = [
        f"{'figure':<{width}}  {'value':>17}  {'target':<22} {'ratio':>10}  verdict",
        *(f"{a:<{width}}  {b:>17}  {c:<22} {d:>10}  {e}" for a, b, c, d, e in rows),
    ]
    return lines


def top_steps(run: RunFigures, n: int = 5) -> str:
    ranked = sorted(run.steps.items(), key=lambda kv: -kv[1])[:n]
    total = sum(run.steps.values())
    return f"{run.label}: steps {total:,.1f} s in all; " + ", ".join(
        f"{k} {v:,.1f} s" for k, v in ranked
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--users", type=int, default=DEFAULT_USERS)
    parser.add_argument("--months", type=int, default=DEFAULT_MONTHS)
    parser.add_argument("--rebuild", action="store_true", help="regenerate the demo source")
    parser.add_argument(
        "--keep", action="store_true", help="keep the warehouses, Dagster homes and logs"
    )
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL)
    parser.add_argument(
        "--full-only",
        action="store_true",
        help="only the dump and the full run (e.g. to try CREDITS_DUCKDB_MEMORY_LIMIT values)",
    )
    args = parser.parse_args()

    from credits_pipeline import settings
    from credits_pipeline.source.fast_reader import render_sql
    from credits_pipeline.source.tables import CREDIT_HISTORIES
    from credits_pipeline.transform.column_lineage import lineage_store
    from credits_pipeline.transform.dbt_project import dbt_project_for

    database = f"bench_end_to_end_{args.users}u_{args.months}m"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DAGSTER_DISABLE_TELEMETRY": "yes",
    }
    for var in (
        settings.CUTOFF_AT_VAR,
        settings.WAREHOUSE_VAR,
        settings.DUCKDB_TEMP_DIRECTORY_VAR,
        settings.LEDGER_FULL_CHECK_DAYS_VAR,
        settings.LEDGER_RECHECK_DAYS_VAR,
    ):
        env.pop(var, None)

    print(f"started {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC ({load()})", flush=True)
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    state = None if args.rebuild else _read_state(database, args.users)
    if state is not None and state.last_day + dt.timedelta(days=1) != yesterday:
        print(f"the kept source ends {state.last_day}: the next day must be yesterday, rebuilding")
        state = None
    if state is None:
        state = build_source(database, args.users, args.months, env)
    else:
        print(f"reusing the source {database} (generated through {state.last_day})")
    restore_source(state)

    engine = engine_for(database)
    with engine.connect() as conn:
        ledger_rows, first = conn.exec_driver_sql(
            f"SELECT count(*), min(created_at) FROM {LEDGER}"
        ).one()
    engine.dispose()
    print(f"source: {args.users:,} users, {args.months} months, {ledger_rows:,} ledger rows")

    env[settings.SOURCE_URL_VAR] = server_url(database)
    env[settings.LEDGER_START_DATE_VAR] = first.date().isoformat()
    work = Path(tempfile.mkdtemp(prefix="credits_bench_end_to_end_"))
    rows = ServerRowsRead(database)
    statements = StatementReads(database)
    try:
        print(f"client dump ({load()}) ...", flush=True)
        dump = extract_bench.client_dump(database, render_sql("mysql", CREDIT_HISTORIES, None, {}))
        dump["load"] = load()
        print(
            f"  {dump['seconds']:,.1f} s, peak RSS {dump['rss_mb']:,.0f} MB ({dump['load']})",
            flush=True,
        )

        observation_rows = rows.of_observation()
        if observation_rows is not None:
            print(f"the source observation's count reads {observation_rows:,} rows", flush=True)
        catch_up_dir = work / "catch_up"
        catch_up_dir.mkdir()
        limit = os.environ.get(settings.DUCKDB_MEMORY_LIMIT_VAR)
        if limit:
            print(f"{settings.DUCKDB_MEMORY_LIMIT_VAR}={limit}", flush=True)
        # a first run computes every model's column lineage, as a new deployment does: none kept
        shutil.rmtree(lineage_store(dbt_project_for("duckdb")), ignore_errors=True)
        full = materialize("full run", catch_up_dir, env, [], rows, args.interval)
        if full.code:
            raise SystemExit(f"the full run failed (exit {full.code}): {full.log}")
        if args.full_only:
            print("\n".join(report(dump, full, [], {"day_rows": 1, "active_users": 0})))
            print(top_steps(full))
            return
        partition_dir = work / "partition"
        shutil.copytree(catch_up_dir, partition_dir, ignore=shutil.ignore_patterns("*.log"))
        full_check_dir = work / "full_check"
        shutil.copytree(catch_up_dir, full_check_dir, ignore=shutil.ignore_patterns("*.log"))
        for copy_dir in (partition_dir, full_check_dir):
            share_partial_parse(catch_up_dir, copy_dir)

        day = append_next_day(state)
        print(
            f"appended {day['day']}: {day['day_rows']:,} rows by {day['active_users']:,} users; "
            f"late row id {day['late_id']} on {day['late_day']}; row {day['rewritten_id']} of "
            f"{day['rewritten_day']} rewritten in place",
            flush=True,
        )
        dailies = [
            materialize("daily catch-up", catch_up_dir, env, [], rows, args.interval, statements),
            materialize(
                "daily --partition",
                partition_dir,
                env,
                ["--partition", day["day"].isoformat()],
                rows,
                args.interval,
                statements,
            ),
            materialize(
                "daily full check",
                full_check_dir,
                {**env, settings.LEDGER_FULL_CHECK_DAYS_VAR: "0"},
                [],
                rows,
                args.interval,
                statements,
            ),
        ]
        for run, run_dir in zip(
            dailies, (catch_up_dir, partition_dir, full_check_dir), strict=True
        ):
            run.found = found_in_warehouse(run_dir / "warehouse.duckdb", day)
    finally:
        rows.close()
        statements.close()
        restore_source(state)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print(
        f"users {args.users:,}, months {args.months}, ledger {ledger_rows:,} rows; next day "
        f"{day['day']}: {day['day_rows']:,} rows, {day['active_users']:,} active users"
    )
    print(f"dump at {dump['load']}; full run at {full.load}")
    for run in dailies:
        print(
            f"{run.label} at {run.load}"
            + (f" (exit {run.code})" if run.code else "")
            + f": {run.found}"
        )
    print("\n".join(report(dump, full, dailies, day, observation_rows)))
    for run in (full, *dailies):
        print(top_steps(run))
    print(f"work directory: {work}" + ("" if args.keep else " (removed; --keep keeps it)"))


if __name__ == "__main__":
    main()
