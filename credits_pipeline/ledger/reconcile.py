"""One reconciliation run: replay + 13 rules over a DuckDB connection, as data.

The Dagster assets, the tests and the benchmark all need the same thing — "given these input
relations and this cut-off, what are the two report relations and how bad is it?" — without
caring where the inputs came from. `reconcile()` is that single entry point: it resolves the ledger
once into a sorted working table, runs the compiled replay over it, runs the set-based rules in
SQL, and leaves both reports as named relations of the session (`REPORT_RELATIONS`, in their stored
column and row order); it returns only what describes them, read back as small queries: row counts,
per-rule summaries with the worst violations, status counts, new violations, column schemas. The
reports never travel through Python: `write_reconciliation()` stores those very relations into the
warehouse's `marts` schema, and `report.py` reads bounded previews from them. With
`keep_state=True` the replay resumes from the state the previous run left in the warehouse and
prepares the next one (`replay_state.py`), which `write_reconciliation()` stores with the reports.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from credits_pipeline import settings
from credits_pipeline.ledger import replay_state as rs
from credits_pipeline.ledger import rule_scope as rsc
from credits_pipeline.ledger import rules as sql
from credits_pipeline.ledger import rules_catalog as rc
from credits_pipeline.ledger.replay import (
    EFFECT_PURCHASE,
    FLAG_BEFORE_PREVIOUS,
    FLAG_CHAIN_BREAK,
    FLAG_OVERDRAFT,
    NULL_INT,
    ReplayResult,
    ReplayState,
    RowPools,
    replay,
    resolve_effects,
)
from credits_pipeline.warehouse import session
from credits_pipeline.warehouse.interface import Session

RULES_TABLE = "_recon_rules"
REPLAY_ROWS_TABLE = sql.REPLAY_ROWS_TABLE  # the replay's flagged rows, read by the replay rules
USER_POOLS_TABLE = "_recon_user_pools"
REPLAYED_STATE_TABLE = "_recon_replayed_state"
ALL_STATE_TABLE = "_recon_state_all"
REPLAY_ROWS_COLUMNS = (
    "id, user_id, flags, is_purchase, amount, previous_amount, expected_previous, available, "
    "previous_created_s, created_s"
)
# Both pools around every ledger row: the rows this run replayed, then all of them (those plus the
# stored rows of users whose past did not change), which replace `credits.ledger_row_pools`.
REPLAYED_POOLS_TABLE = "_recon_replayed_pools"
ROW_POOLS_WORK_TABLE = "_recon_row_pools"
ANOMALIES_WORK_TABLE = "_recon_anomalies"
# The two reports as stored, each a temp table of the run in its stored column and row order: the
# reconciliation's working table is already final (`order by user_id`), the anomalies' final one
# adds the detection times to the rules' rows and sorts them.
RECONCILIATION_WORK_TABLE = sql.RECONCILIATION_WORK_TABLE
ANOMALIES_REPORT_TABLE = "_recon_anomalies_report"
REPORT_RELATIONS = {
    rc.RECONCILIATION_TABLE: RECONCILIATION_WORK_TABLE,
    rc.ANOMALIES_TABLE: ANOMALIES_REPORT_TABLE,
}
WORST_LIMIT = 10
# Ledger rows the replay holds at once. Each row costs ~300 bytes while its batch is replayed (the
# Arrow batch, its numpy copy, the kernel's outputs, the pools written out): ~150 MB a batch, kept
# small because it sits outside DuckDB's memory limit in the same process (measured at 6.5 M rows:
# 2,000,000-row batches added ~0.6 GB to the worker's peak).
DEFAULT_BATCH_ROWS = 500_000

RECONCILIATION_COLUMNS = (
    "user_id",
    "ledger_subscription_balance",
    "recorded_subscription_balance",
    "ledger_purchased_balance",
    "recorded_purchased_balance",
    "drift",
    "chain_breaks",
    "first_break_history_id",
    "forfeited_credits",
    "written_off_credits",
    "status",
)
ANOMALY_OUTPUT_COLUMNS = (*sql.ANOMALY_COLUMNS, "detected_at", rs.FIRST_DETECTED_COLUMN)


@dataclass(frozen=True)
class RuleSummary:
    """How one rule fared: violations, credits involved, and the worst ones for a human to act
    on."""

    code: str
    severity: str
    count: int
    credits: int
    worst: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.count == 0


@dataclass(frozen=True)
class ReconciliationResult:
    """What both reports add up to, read from the relations `REPORT_RELATIONS` names on the run's
    session (never the reports themselves: they stay in the warehouse, whatever their size).

    `users` and `anomaly_rows` are the reports' row counts, `*_schema` their columns (for the
    column-schema metadata), `new_violations` the anomalies first reported at this cut-off
    per rule.
    """

    cutoff_at: dt.datetime
    users: int
    anomaly_rows: int
    reconciliation_schema: pa.Schema
    anomalies_schema: pa.Schema
    summaries: dict[str, RuleSummary]
    status_counts: dict[str, int]
    new_violations: dict[str, int]
    ledger_rows: int
    timings: dict[str, float]
    replay_mode: str = rs.MODE_FULL
    replay_reason: str = ""
    replayed_rows: int = 0
    dirty_users: int = 0
    state_kept: bool = False
    rules_mode: str = rsc.MODE_ALL
    rules_reason: str = ""
    rule_scope_users: int = 0


def naive_utc(value: dt.datetime) -> dt.datetime:
    """The cut-off as a naive UTC datetime at whole seconds (the warehouse's TIMESTAMP)."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.replace(microsecond=0)


def _run(con: Session, statement: str, params: dict[str, object]) -> None:
    con.execute(statement, sql.used_params(statement, params))


def _plain(a: np.ndarray | np.ma.MaskedArray) -> np.ndarray:
    return a.filled(NULL_INT) if isinstance(a, np.ma.MaskedArray) else a


@dataclass(frozen=True)
class ReplayRun:
    """How the replay went: how many rows it walked, from scratch or resumed, and the ledger's
    size."""

    plan: rs.ResumePlan
    replayed_rows: int
    ledger_rows: int


def _register_as(
    con: Session,
    table: pa.Table,
    name: str,
    union: str = "",
    params: dict[str, object] | None = None,
) -> None:
    """Create temp table `name` from an Arrow table, followed (`union all`) by another select."""
    con.register(f"{name}_arrow", table)
    statement = f"create or replace temp table {name} as select * from {name}_arrow"
    if union:
        statement += f" union all {union}"
    con.execute(statement, sql.used_params(statement, params or {}))
    con.unregister(f"{name}_arrow")


def _input_batches(
    con: Session, statement: str, params: dict[str, object], batch_rows: int
) -> Iterator[dict[str, np.ndarray]]:
    """The replay's input as numpy columns, `batch_rows` rows at a time (a streamed result)."""
    for batch in session.stream_batches(con, statement, params, batch_rows):
        if batch.num_rows:
            yield {
                name: np.ascontiguousarray(
                    batch.column(i).to_numpy(zero_copy_only=False, writable=True), dtype=np.int64
                )
                for i, name in enumerate(batch.schema.names)
            }


FLAGGED_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("user_id", pa.int64()),
        ("flags", pa.int16()),
        ("is_purchase", pa.bool_()),
        ("amount", pa.int64()),
        ("previous_amount", pa.int64()),
        ("expected_previous", pa.int64()),
        ("available", pa.int64()),
        ("previous_created_s", pa.int64()),
        ("created_s", pa.int64()),
    ]
)


def _row_pools(arrays: dict[str, np.ndarray], pools: RowPools) -> pa.Table:
    """Both pools around each row of a batch, as `credits.ledger_row_pools` stores them."""
    user_id = arrays["user_id"]
    columns: dict[str, pa.Array] = {
        "credit_history_id": pa.array(arrays["id"], pa.int64()),
        "user_id": pa.array(user_id, pa.int64(), mask=user_id == NULL_INT),
    }
    for field_name, column in rs.ROW_POOLS_COLUMNS.items():
        values = getattr(pools, field_name)
        mask = values == NULL_INT if field_name == "subscription_before" else None
        columns[column] = pa.array(values, pa.int64(), mask=mask)
    return pa.table(columns, schema=ROW_POOLS_ARROW_SCHEMA)


ROW_POOLS_ARROW_SCHEMA = pa.schema(
    [
        ("credit_history_id", pa.int64()),
        ("user_id", pa.int64()),
        *((column, pa.int64()) for column in rs.ROW_POOLS_COLUMNS.values()),
    ]
)


def _flagged_rows(arrays: dict[str, np.ndarray], effect: np.ndarray, res: ReplayResult) -> pa.Table:
    """The rows the replay flagged, with what the rules need to describe them."""
    flagged = np.flatnonzero(res.flags)
    prev = arrays["previous_amount"][flagged]
    return pa.table(
        {
            "id": pa.array(arrays["id"][flagged], pa.int64()),
            "user_id": pa.array(arrays["user_id"][flagged], pa.int64()),
            "flags": pa.array(res.flags[flagged].astype(np.int16), pa.int16()),
            "is_purchase": pa.array(effect[flagged] == EFFECT_PURCHASE, pa.bool_()),
            "amount": pa.array(arrays["amount"][flagged], pa.int64()),
            "previous_amount": pa.array(prev, pa.int64(), mask=prev == NULL_INT),
            "expected_previous": pa.array(res.expected_previous[flagged], pa.int64()),
            "available": pa.array(res.available[flagged], pa.int64()),
            "previous_created_s": pa.array(res.previous_created_s[flagged], pa.int64()),
            "created_s": pa.array(arrays["created_s"][flagged], pa.int64()),
        },
        schema=FLAGGED_SCHEMA,
    )


def _replay_in_batches(
    batches: Iterable[dict[str, np.ndarray]],
    start: ReplayState,
    event_ids: np.ndarray,
    event_effects: np.ndarray,
    take_pools: Callable[[pa.Table], None] = lambda pools: None,
) -> tuple[pa.Table, ReplayState, int]:
    """Replay rows that arrive in (user_id, id) order, batch after batch, with bounded memory.

    Each batch resumes from `start` and from the state of the previous batch's last user (a user's
    rows may straddle two batches), so the outcome is the replay of all rows at once; only the
    flagged rows and one state entry per user are kept. Each batch's pools around every row are
    handed to `take_pools` and not kept. Returns the flagged rows, the state of every user seen
    (or resumed) and the number of rows replayed.
    """
    flagged_parts: list[pa.Table] = []
    state_parts: list[ReplayState] = []
    carry = ReplayState.empty()
    n = 0
    for arrays in batches:
        effect = resolve_effects(
            arrays["credit_events_id"], arrays["event_type"], event_ids, event_effects
        )
        rows = len(arrays["id"])
        res = replay(
            arrays["user_id"],
            arrays["id"],
            effect,
            arrays["amount"],
            arrays["previous_amount"],
            arrays["created_s"],
            order=np.arange(rows, dtype=np.int64),  # already sorted; the kernel verifies it
            start=start.advanced(carry) if len(carry) else start,
        )
        flagged_parts.append(_flagged_rows(arrays, effect, res))
        take_pools(_row_pools(arrays, res.pools))
        batch_state = res.state
        state_parts.append(batch_state)
        carry = ReplayState(**{f: a[-1:] for f, a in batch_state.columns().items()})
        n += rows
    flagged = pa.concat_tables(flagged_parts) if flagged_parts else FLAGGED_SCHEMA.empty_table()
    if not state_parts:
        return flagged, ReplayState.empty(), 0
    merged = {f: np.concatenate([getattr(p, f) for p in state_parts]) for f in ReplayState.FIELDS}
    # a user split across two batches appears twice in a row: the later entry is its final state
    last = np.append(merged["user_id"][1:] != merged["user_id"][:-1], True)
    return flagged, ReplayState(**{f: a[last] for f, a in merged.items()}), n


def _load_row_pools(con: Session, pools_file: Path, batch_rows: int) -> None:
    """`REPLAYED_POOLS_TABLE`: the pools around every replayed row, from the run's spill file.

    Why a file: the replay's input is a stream on this very session, and a statement run on a
    DuckDB connection mid-stream ends that stream without an error; so the pools wait on disk
    (not in memory: a row each) until the replay is done, then the warehouse reads them in
    (`session.insert_parquet`: DuckDB reads the file itself, under its memory limit).
    """
    _register_as(con, ROW_POOLS_ARROW_SCHEMA.empty_table(), REPLAYED_POOLS_TABLE)
    session.insert_parquet(
        con, REPLAYED_POOLS_TABLE, pools_file, ROW_POOLS_ARROW_SCHEMA, batch_rows
    )


def _replay_outputs(
    con: Session,
    params: dict[str, object],
    keep_state: bool,
    force_full: bool,
    batch_rows: int,
    inputs_digest: str,
    lap: Callable[[str], None] = lambda name: None,
) -> ReplayRun:
    """Run the compiled replay over the working rows; register what it found as temp tables.

    With `keep_state` the replay resumes from the warehouse's stored state where that is safe
    (`replay_state.plan_replay`) and the next state is left in temp tables for
    `write_reconciliation`; the relations it registers are the same as a full replay's.
    """
    events = con.execute(sql.EVENT_EFFECTS_SQL).fetchnumpy()
    event_ids, event_effects = _plain(events["id"]), _plain(events["effect_code"])
    digest_of_events = rs.events_digest(events)
    if keep_state:
        cutoff_at = params["cutoff_at"]
        assert isinstance(cutoff_at, dt.datetime)  # rules.sql_params binds the cut-off there
        plan = rs.plan_replay(con, cutoff_at, digest_of_events, params, force_full)
    else:
        plan = rs.ResumePlan(rs.MODE_FULL, "the replay state is not kept", -1, ReplayState.empty())
    lap("replay_plan")
    params = params | {
        "through_id": plan.through_id,
        "events_digest": digest_of_events,
        "mode": plan.mode,
        "replay_sequence": plan.sequence,
    }
    statement = sql.replay_input_sql(rs.RESUMED_ROWS_FILTER if plan.resumed else "")
    batches = _input_batches(con, statement, sql.used_params(statement, params), batch_rows)
    with tempfile.TemporaryDirectory(prefix="credits_replay_", dir=spill_root()) as spill:
        pools_file = Path(spill) / "row_pools.parquet"
        with pq.ParquetWriter(pools_file, ROW_POOLS_ARROW_SCHEMA) as pools_writer:
            flagged_rows, state, n = _replay_in_batches(
                batches, plan.start, event_ids, event_effects, pools_writer.write_table
            )
        lap("replay")
        _load_row_pools(con, pools_file, batch_rows)
    statement = rs.row_pools_sql(plan, ROW_POOLS_WORK_TABLE, REPLAYED_POOLS_TABLE)
    _run(con, statement, params)
    lap("row_pools")
    replayed_state = pa.table({k: pa.array(v, pa.int64()) for k, v in state.columns().items()})
    _register_as(
        con,
        flagged_rows,
        REPLAY_ROWS_TABLE,
        rs.untouched_flags_sql(plan, REPLAY_ROWS_COLUMNS, f"{REPLAY_ROWS_TABLE}_arrow"),
        params,
    )
    _register_as(con, replayed_state, REPLAYED_STATE_TABLE)
    con.execute(
        f"create or replace temp table {ALL_STATE_TABLE} as "
        f"select * from {REPLAYED_STATE_TABLE} union all "
        + rs.untouched_state_sql(plan, REPLAYED_STATE_TABLE)
    )
    con.execute(
        f"create or replace temp table {USER_POOLS_TABLE} as select user_id, subscription as "
        "ledger_subscription_balance, purchased as ledger_purchased_balance, chain_breaks, case "
        "when first_break_id = $null_int then null else first_break_id end as "
        "first_break_history_id, forfeited as forfeited_credits, written_off as "
        f"written_off_credits from {ALL_STATE_TABLE}",
        {"null_int": NULL_INT},
    )
    ledger_rows = n
    if keep_state:
        con.execute(rs.next_state_sql(ALL_STATE_TABLE))
        _run(con, rs.NEXT_CHECKPOINT_SQL, params | {"inputs_digest": inputs_digest})
        ledger_rows = int(
            con.execute(f"select ledger_rows from {rs.NEXT_CHECKPOINT_TABLE}").fetchone()[0]
        )
    return ReplayRun(plan, n, ledger_rows)


RECONCILIATION_SQL = f"""
create or replace temp table {RECONCILIATION_WORK_TABLE} as
with recorded as (
    select
        u.id as user_id,
        coalesce(p.ledger_subscription_balance, 0) as ledger_subscription_balance,
        cast(coalesce(u.remaining_credit_amount, 0) as bigint) as recorded_subscription_balance,
        coalesce(p.ledger_purchased_balance, 0) as ledger_purchased_balance,
        cast(coalesce(u.extra_credits, 0) as bigint) as recorded_purchased_balance,
        coalesce(p.chain_breaks, 0) as chain_breaks,
        p.first_break_history_id,
        coalesce(p.forfeited_credits, 0) as forfeited_credits,
        coalesce(p.written_off_credits, 0) as written_off_credits
    from {sql.USERS} as u
    left join {USER_POOLS_TABLE} as p on p.user_id = u.id
)
select
    user_id,
    ledger_subscription_balance,
    recorded_subscription_balance,
    ledger_purchased_balance,
    recorded_purchased_balance,
    (recorded_subscription_balance + recorded_purchased_balance)
        - (ledger_subscription_balance + ledger_purchased_balance) as drift,
    chain_breaks,
    first_break_history_id,
    forfeited_credits,
    written_off_credits,
    case
        when chain_breaks > 0 then $broken
        when recorded_subscription_balance <> ledger_subscription_balance
            or recorded_purchased_balance <> ledger_purchased_balance then $drifted
        else $ok
    end as status
from recorded
order by user_id
"""

ANOMALIES_DDL = f"""
create or replace temp table {ANOMALIES_WORK_TABLE} (
    rule varchar,
    user_id bigint,
    credit_history_id bigint,
    entity_type varchar,
    entity_id bigint,
    expected varchar,
    actual varchar,
    detail varchar,
    credits bigint
)
"""

# The anomalies' stored order: rule order, then the violation's key (`a`: the anomalies, `k`: the
# rules table). BigQuery keeps no row order, so reading a report in order says it again.
ANOMALIES_ORDER = (
    "k.position, a.user_id nulls first, a.credit_history_id nulls first, a.entity_type, "
    "a.entity_id, a.expected, a.actual"
)

ANOMALIES_OUTPUT_SQL = f"""
select
    a.rule,
    a.user_id,
    a.credit_history_id,
    a.entity_type,
    a.entity_id,
    a.expected,
    a.actual,
    a.detail,
    a.credits,
    cast($cutoff_at as timestamp) as detected_at,
    coalesce(p.first_detected_at, cast($cutoff_at as timestamp)) as first_detected_at
from {ANOMALIES_WORK_TABLE} as a
join {RULES_TABLE} as k on k.rule = a.rule
left join {rs.PREVIOUS_DETECTIONS_TABLE} as p on {rs.detection_join("a", "p")}
order by {ANOMALIES_ORDER}
"""

ANOMALIES_REPORT_SQL = f"""
create or replace temp table {ANOMALIES_REPORT_TABLE} as
{ANOMALIES_OUTPUT_SQL}"""


# The figures reported are read from the report relations themselves, so they describe exactly
# what `write_reconciliation` stores (and a stored anomalies table gives the same figures again:
# `rule_summaries`).
def _totals_sql(anomalies: str) -> str:
    return f"""
select rule, count(*) as violations, coalesce(sum(credits), 0) as credits
from {anomalies}
group by rule
"""


def _worst_sql(anomalies: str) -> str:
    return f"""
with ranked as (
    select
        *,
        row_number() over (
            partition by rule
            order by credits desc nulls last, user_id nulls first, credit_history_id, entity_id
        ) as rank
    from {anomalies}
)
select rule, user_id, credit_history_id, entity_type, entity_id, expected, actual, credits, detail
from ranked
where rank <= $limit
order by rule, rank
"""


# A violation is new when this cut-off is the first that reported it.
def _new_violations_sql(anomalies: str) -> str:
    return f"""
select rule, count(*)
from {anomalies}
where {rs.FIRST_DETECTED_COLUMN} = {rs.DETECTED_COLUMN}
group by rule
"""


WORST_COLUMNS = (
    "user_id",
    "credit_history_id",
    "entity_type",
    "entity_id",
    "expected",
    "actual",
    "credits",
    "detail",
)


def rule_summaries(con: Session, anomalies: str) -> tuple[dict[str, RuleSummary], dict[str, int]]:
    """Every rule's summary (in rule order) and its new violations, read from an anomalies
    relation in the stored layout: this run's (`ANOMALIES_REPORT_TABLE`) or the stored table.

    Why one function: the reconciliation's checks and the money-check gate
    (`ledger/checks.py`) must report the same numbers for the same anomalies.
    """
    totals = {
        rule: (int(count), int(credits))
        for rule, count, credits in con.execute(_totals_sql(anomalies)).fetchall()
    }
    worst: dict[str, list[dict]] = {}
    for row in con.execute(_worst_sql(anomalies), {"limit": WORST_LIMIT}).fetchall():
        worst.setdefault(row[0], []).append(dict(zip(WORST_COLUMNS, row[1:], strict=True)))
    summaries = {
        rule.code: RuleSummary(
            rule.code,
            rule.severity,
            *totals.get(rule.code, (0, 0)),
            worst.get(rule.code, []),
        )
        for rule in rc.RULES
    }
    new = {
        rule: int(count) for rule, count in con.execute(_new_violations_sql(anomalies)).fetchall()
    }
    return summaries, new


STATUS_COUNTS_SQL = f"""
select status, count(*) from {RECONCILIATION_WORK_TABLE} group by status
"""


def spill_root() -> Path | None:
    """Where the replay's pools spill file goes: `CREDITS_DUCKDB_TEMP_DIRECTORY` when set (the
    disk the operator gave DuckDB for spilling, sized for it), else the system's temp directory.

    The file holds ~70 bytes per replayed row (a full replay: the whole ledger) until the pools
    are loaded, so it belongs on the disk chosen for spilling, not on a small `/tmp`.
    """
    root = settings.duckdb_temp_directory()
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
    return root


# The event catalog's rows, for the rules' inputs digest (tiny: one row per credit event).
EVENT_ROWS_SQL = f"""
select id, name, type, calculation_type, value, min_amount, effect_code
from {sql.EVENTS_TABLE}
order by id
"""


def _rule_scope(
    con: Session,
    plan: rs.ResumePlan,
    keep_state: bool,
    digest: str,
    params: dict[str, object],
) -> rsc.RuleScope:
    """Which rows the per-user rules read this run (`rule_scope.py`), and the relations they need:
    the content keys, each user's facts (stored for the next run) and the scoped rows; plus the
    replay's out-of-order rows for `timestamp_order`, narrowed to the same users."""
    _run(con, sql.CONTENT_KEYS_SQL, params)
    if keep_state:
        con.execute(rsc.USER_FACTS_SQL)
        scope = rsc.plan_rule_scope(con, plan, digest, params)
    else:
        scope = rsc.RuleScope(rsc.MODE_ALL, "the replay state is not kept")
    _run(con, sql.scoped_rows_sql(scope.scoped), params)
    in_scope = (
        f" and coalesce(user_id, $null_int) in (select user_id from {sql.RULE_SCOPE_TABLE})"
        if scope.scoped
        else ""
    )
    _run(
        con,
        f"create or replace temp table {sql.TS_PREVIOUS_TABLE} as "
        "select id, user_id, amount, make_timestamp(created_s * 1000000) as created_at, "
        "make_timestamp(previous_created_s * 1000000) as previous_created_at "
        f"from {REPLAY_ROWS_TABLE} where flags & $before_previous_bit <> 0{in_scope}",
        params | {"before_previous_bit": FLAG_BEFORE_PREVIOUS},
    )
    return scope


def reconcile(
    con: Session,
    cutoff_at: dt.datetime,
    keep_state: bool = False,
    force_full_replay: bool = False,
    batch_rows: int | None = None,
) -> ReconciliationResult:
    """Replay the ledger and evaluate all 13 rules over the input relations of
    `rules.INPUT_RELATIONS`.

    The connection must expose those relations (tables or views, e.g. temp views); working tables
    named `_recon_*` are created as temp tables on it. `cutoff_at` is the extraction cut-off: it
    decides `timestamp_order`'s "after the extraction" and is every anomaly's `detected_at`.
    `keep_state` resumes the replay from the state stored in `credits._replay_*` (when safe; a full
    replay otherwise, or always with `force_full_replay`) and prepares the next state; the result
    is the same either way. The replay streams its input `batch_rows` rows at a time
    (default `DEFAULT_BATCH_ROWS`): memory stays bounded however long the ledger.
    """
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 4)
        clock = now

    cutoff_at = naive_utc(cutoff_at)
    params = sql.sql_params(cutoff_at) | {
        "chain_bit": FLAG_CHAIN_BREAK,
        "overdraft_bit": FLAG_OVERDRAFT,
        "user_entity": rc.ENTITY_USER,
        "broken": rc.STATUS_BROKEN_CHAIN,
        "drifted": rc.STATUS_DRIFT,
        "ok": rc.STATUS_OK,
        "limit": WORST_LIMIT,
    }
    for statement, rows in sql.setup_statements():
        if rows:
            con.executemany(statement, rows)
        else:
            con.execute(statement)
    con.execute(
        f"create or replace temp table {RULES_TABLE} "
        "(rule varchar, position integer, severity varchar)"
    )
    con.executemany(
        f"insert into {RULES_TABLE} values (?, ?, ?)",
        [(r.code, i, r.severity) for i, r in enumerate(rc.RULES)],
    )
    _run(con, sql.EVENTS_SQL, params)
    _run(con, sql.ROWS_SQL, params)
    digest = rsc.inputs_digest(con.execute(EVENT_ROWS_SQL).fetchall())
    run = _replay_outputs(
        con, params, keep_state, force_full_replay, batch_rows or DEFAULT_BATCH_ROWS, digest, lap
    )
    lap("replay_outputs")
    scope = _rule_scope(con, run.plan, keep_state, digest, params)
    lap("rule_scope")
    _run(con, sql.ROW_CHECKS_SQL, params)
    lap("row_checks")
    _run(con, sql.CREDITED_SQL, params)
    lap("credited_window")
    _run(con, RECONCILIATION_SQL, params)
    con.execute(ANOMALIES_DDL)
    if scope.scoped:  # the per-user rules' anomalies of every user out of scope stand
        _run(con, f"insert into {ANOMALIES_WORK_TABLE} {rsc.KEPT_ANOMALIES_SQL}", params)
    for statement in sql.REPLAY_RULE_SQL.values():
        _run(con, f"insert into {ANOMALIES_WORK_TABLE} {statement}", params)
    lap("replay_rules")
    for code, statement in sql.ROW_RULE_SQL.items():
        _run(con, f"insert into {ANOMALIES_WORK_TABLE} {statement}", params)
        lap(f"rule_{code}")

    if keep_state:
        # the per-user rules' anomalies for the next run; the stored report says since when each
        # violation is known
        con.execute(rsc.next_rule_anomalies_sql(ANOMALIES_WORK_TABLE))
        rs.prepare_previous_detections(con, f"{rc.MARTS_SCHEMA}.{rc.ANOMALIES_TABLE}", params)
    else:
        con.execute(rs.EMPTY_DETECTIONS_SQL)
    _run(con, ANOMALIES_REPORT_SQL, params)
    summaries, new_violations = rule_summaries(con, ANOMALIES_REPORT_TABLE)
    status_counts = {s: 0 for s in (rc.STATUS_OK, rc.STATUS_DRIFT, rc.STATUS_BROKEN_CHAIN)}
    for status, count in con.execute(STATUS_COUNTS_SQL).fetchall():
        status_counts[status] = int(count)
    lap("collect")
    return ReconciliationResult(
        cutoff_at=cutoff_at,
        users=sum(status_counts.values()),
        anomaly_rows=sum(summary.count for summary in summaries.values()),
        reconciliation_schema=relation_schema(con, RECONCILIATION_WORK_TABLE),
        anomalies_schema=relation_schema(con, ANOMALIES_REPORT_TABLE),
        summaries=summaries,
        status_counts=status_counts,
        new_violations=new_violations,
        ledger_rows=run.ledger_rows,
        timings=timings,
        replay_mode=run.plan.mode,
        replay_reason=run.plan.reason,
        replayed_rows=run.replayed_rows,
        dirty_users=run.plan.dirty_users,
        state_kept=keep_state,
        rules_mode=scope.mode,
        rules_reason=scope.reason,
        rule_scope_users=scope.users,
    )


def relation_schema(con: Session, relation: str) -> pa.Schema:
    """A relation's columns and their Arrow types, without reading a row."""
    return con.execute(f"select * from {relation} limit 0").fetch_arrow_table().schema


def drop_working_tables(con: Session) -> None:
    """Free the `_recon_*` temp tables (the 5M-row working copy above all) once a run is done."""
    con.execute(f"drop view if exists {sql.SCOPED_ROWS_TABLE}")  # a view over the next one
    con.execute(f"drop view if exists {sql.ROWS_TABLE}")
    for name in (
        sql.ROW_CHECKS_TABLE,
        sql.CREDITED_TABLE,
        sql.CATALOG_TABLE,
        sql.EVENTS_TABLE,
        sql.TS_PREVIOUS_TABLE,
        RULES_TABLE,
        REPLAY_ROWS_TABLE,
        USER_POOLS_TABLE,
        ANOMALIES_WORK_TABLE,
        ANOMALIES_REPORT_TABLE,
        RECONCILIATION_WORK_TABLE,
        REPLAYED_STATE_TABLE,
        ALL_STATE_TABLE,
        REPLAYED_POOLS_TABLE,
        ROW_POOLS_WORK_TABLE,
        sql.CONTENT_KEYS_TABLE,
    ):
        con.execute(f"drop table if exists {name}")
    rs.drop_working_tables(con)
    rsc.drop_working_tables(con)
