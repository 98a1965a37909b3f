"""Where the daily replay resumes from: each user's replay state at the previous cut-off.

Replaying the whole ledger every day makes the reconciliation's cost grow with the history; the
replay only needs each user's state after the rows it has already seen (`replay.ReplayState`)
and the rows above them. This module keeps that state in the warehouse, next to the reports it
produced: `credits._replay_state` (one row per user: pools, counters, last id, and a fingerprint of
the user's replayed rows), `credits._replay_flags` (every row the replay flagged so far: the
chain breaks, overdrafts and out-of-order timestamps the report must keep listing) and
`credits._replay_checkpoint` (one row: the highest id replayed, the cut-off, the event catalog's
effects). A run resumes only when that is safe, and says why when it does not:

- no checkpoint yet, a cut-off earlier than the checkpoint's, or a changed event catalog (a row's
  effect comes from it) → a full replay;
- otherwise each user's rows at or below the checkpoint's id are compared with the stored
  fingerprint (row count, sum of ids, sum of a per-row fingerprint of the columns the replay
  reads); a user whose past rows changed, appeared late below the checkpoint or vanished is
  replayed again from its first row, every other user resumes from its stored state with the
  rows above the checkpoint only.

The reports carry one more memory across runs: each anomaly's `first_detected_at`, the cut-off of
the first run that reported the same violation (same rule and key: user, ledger row, entity), read
back from the stored `marts.ledger_anomalies` (`PREVIOUS_DETECTIONS_SQL`) so that "new since
yesterday" is a fact of the table, not a guess of whoever reads it.

The fingerprint is plain integer arithmetic modulo a prime, so DuckDB and BigQuery compute the same
numbers from the same SQL. All SQL here is DuckDB's dialect (transpiled on BigQuery) and takes
values as bound parameters.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import numpy as np

from credits_pipeline.ledger import rules as sql
from credits_pipeline.ledger import rules_catalog as rc
from credits_pipeline.ledger.replay import ReplayState

STATE_SCHEMA = rc.ROW_POOLS_SCHEMA  # `credits`: the state lives beside the pools it keeps
STATE_TABLE = "_replay_state"
FLAGS_TABLE = "_replay_flags"
CHECKPOINT_TABLE = "_replay_checkpoint"
# Both pools around every ledger row, from the one replay (ledger/replay.py): public, the dbt
# source `replay.ledger_row_pools` that the balance marts read (int_credit_replay).
ROW_POOLS_TABLE = rc.ROW_POOLS_TABLE
# Its columns after credit_history_id and user_id, each with the `replay.RowPools` field it holds.
ROW_POOLS_COLUMNS = {
    "row_number": "user_row_number",
    "subscription_before": "subscription_before",
    "purchased_before": "purchased_before",
    "subscription_after": "subscription_after",
    "purchased_after": "purchased_after",
    "forfeited": "forfeited_credits",
    "written_off": "written_off_credits",
}
# And its last column: the sequence number of the reconciliation run that replayed the row (1 on a
# warehouse's first run, one more on each run after; the checkpoint keeps the latest). A row keeps
# its number until its user is replayed again, so what changed since a reader last looked is "the
# users whose rows' numbers or count moved": how int_credit_replay maintains itself incrementally.
REPLAY_SEQUENCE_COLUMN = "replay_sequence"
PERSISTED_TABLES = (STATE_TABLE, FLAGS_TABLE, CHECKPOINT_TABLE, ROW_POOLS_TABLE)
# The dbt model that keeps the pools' sequence numbers per user (its rows of a user are rebuilt
# when the user's numbers move): the sequence never restarts below what it holds.
SEQUENCE_READERS = (f"{STATE_SCHEMA}.int_credit_replay",)

# Working tables of one run (temp tables on the reconciliation's connection).
DIGEST_TABLE = "_recon_user_digest"
DIRTY_USERS_TABLE = "_recon_dirty_users"
NEXT_STATE_TABLE = "_recon_next_state"
NEXT_CHECKPOINT_TABLE = "_recon_next_checkpoint"
PREVIOUS_DETECTIONS_TABLE = "_recon_previous_detections"

FIRST_DETECTED_COLUMN = "first_detected_at"
DETECTED_COLUMN = "detected_at"

MODE_FULL = "full"
MODE_RESUMED = "resumed"

# The fingerprint of a row: a weighted sum of the columns the replay and the per-user rules read,
# modulo a Mersenne prime. Every weight is below 2^26, so every term stays below 2^57 and the ten
# of them below 2^61: nothing overflows a BIGINT / INT64.
FINGERPRINT_PRIME = 2_147_483_647
# The replay's inputs: also what the extraction's closed-day fingerprints sum in the source
# databases (`extract/fingerprint.py` renders these very terms in their dialects).
REPLAY_FINGERPRINT_TERMS = (
    ("id", 16_807),
    ("credit_events_id", 48_271),
    ("event_type", 69_621),
    ("cast(amount as bigint)", 39_373),
    ("cast(previous_amount as bigint)", 62_089_911),
    ("epoch_ms(created_at) // 1000", 40_692),
)
# What only the per-user rules read (`rule_scope.py`): a change there must put the user in the
# next run's scope too. Text goes through the engine's own string hash (DuckDB's `hash`,
# BigQuery's `farm_fingerprint`), so these terms have no rendering in the source databases; the
# state is only ever compared with state computed by the same engine.
RULE_FINGERPRINT_TERMS = (
    (
        "case when creditable_type is null then null "
        f"else cast(mod(hash(creditable_type), {FINGERPRINT_PRIME}) as bigint) end",
        33_554_393,
    ),
    ("creditable_id", 1_103_515),
    ("calculative_index", 22_695_477),
    ("epoch_ms(updated_at) // 1000", 1_664_525),
)


def fingerprint_sql(terms: tuple[tuple[str, int], ...]) -> str:
    """The weighted sum of `terms` modulo the prime, as a DuckDB expression over a ledger row."""
    return (
        "mod("
        + " + ".join(
            f"mod(cast(coalesce({expr}, -1) as bigint) + 2, {FINGERPRINT_PRIME}) * {weight}"
            for expr, weight in terms
        )
        + f", {FINGERPRINT_PRIME})"
    )


# The replay's inputs alone: what a source database computes for a closed day, row by row.
REPLAY_ROW_FINGERPRINT = fingerprint_sql(REPLAY_FINGERPRINT_TERMS)
# Every column the replay and the per-user rules read: the state's per-user digest.
ROW_FINGERPRINT = fingerprint_sql(REPLAY_FINGERPRINT_TERMS + RULE_FINGERPRINT_TERMS)
USER_KEY = "coalesce(user_id, $null_int)"

DIGEST_SQL = f"""
create or replace temp table {DIGEST_TABLE} as
with fingerprinted as (
    select
        {USER_KEY} as user_id,
        id,
        {ROW_FINGERPRINT} as fingerprint,
        id <= $through_id as replayed_before
    from {sql.LEDGER_ROWS}
)
select
    user_id,
    count(*) as rows_now,
    sum(id) as id_sum_now,
    sum(fingerprint) as digest_now,
    sum(case when replayed_before then 1 else 0 end) as rows_before,
    sum(case when replayed_before then id else 0 end) as id_sum_before,
    sum(case when replayed_before then fingerprint else 0 end) as digest_before,
    max(id) as last_id
from fingerprinted
group by user_id
"""

DIRTY_USERS_SQL = f"""
create or replace temp table {DIRTY_USERS_TABLE} as
select coalesce(d.user_id, s.user_id) as user_id
from (select * from {DIGEST_TABLE} where rows_before > 0) as d
full outer join {STATE_SCHEMA}.{STATE_TABLE} as s on s.user_id = d.user_id
where d.user_id is null
    or s.user_id is null
    or d.rows_before <> s.rows
    or d.id_sum_before <> s.id_sum
    or d.digest_before <> s.digest
"""

START_STATE_SQL = f"""
select {", ".join(f"s.{f}" for f in ReplayState.FIELDS)}
from {STATE_SCHEMA}.{STATE_TABLE} as s
where s.user_id in (
        select user_id from {DIGEST_TABLE} where rows_now > rows_before and rows_before > 0
    )
    and s.user_id not in (select user_id from {DIRTY_USERS_TABLE})
"""

# The rows a resumed run replays: the new ones, and every row of a user whose past changed.
RESUMED_ROWS_FILTER = f"""
where id > $through_id
    or {USER_KEY} in (select user_id from {DIRTY_USERS_TABLE})
"""

CHECKPOINT_SQL = f"select * from {STATE_SCHEMA}.{CHECKPOINT_TABLE}"


@dataclass(frozen=True)
class Checkpoint:
    """What the previous run replayed: rows up to `through_id`, as of `cutoff_at`."""

    through_id: int
    cutoff_at: dt.datetime
    events_digest: str
    # what the per-user rules read besides the ledger (`rule_scope.inputs_digest`); empty in a
    # state stored before the rules were scoped
    inputs_digest: str = ""
    # the run's sequence number (REPLAY_SEQUENCE_COLUMN); 0 in a state stored before it existed
    replay_sequence: int = 0


@dataclass(frozen=True)
class ResumePlan:
    """How this run replays: from scratch, or resuming `start` with the rows above `through_id`."""

    mode: str
    reason: str
    through_id: int
    start: ReplayState
    dirty_users: int = 0
    # this run's number, stamped on every row it replays (REPLAY_SEQUENCE_COLUMN)
    sequence: int = 1

    @property
    def resumed(self) -> bool:
        return self.mode == MODE_RESUMED


def events_digest(events: dict[str, np.ndarray]) -> str:
    """A digest of each event's name, effect and service (`rules.EVENT_EFFECTS_SQL`).

    A changed effect changes every past row's replay. A renamed event or a changed service changes
    no pool, but every row of the per-row pools' readers (int_credit_replay names each row's event
    and service): they can only trust the rows they kept when every row was replayed again, so a
    change here replays the whole ledger (rare: a release of the application's catalog).
    """
    columns = [np.ma.asarray(events[c]).tolist() for c in EVENT_DIGEST_COLUMNS]  # NULL: None
    rows = sorted(zip(*columns, strict=True), key=repr)
    return hashlib.sha256(repr(rows).encode()).hexdigest()


EVENT_DIGEST_COLUMNS = ("id", "effect_code", "name", "service")


def tables_exist(con, names: tuple[str, ...]) -> bool:
    """Whether every one of these persisted state tables exists in the warehouse."""
    for name in names:
        try:
            con.execute(f"select 1 from {STATE_SCHEMA}.{name} limit 1").fetchall()
        except Exception:
            return False
    return True


def read_checkpoint(con) -> Checkpoint | None:
    """The previous run's checkpoint, or None when there is none (or its tables are incomplete)."""
    if not tables_exist(con, PERSISTED_TABLES):
        return None
    rows = con.execute(CHECKPOINT_SQL).fetch_arrow_table().to_pylist()
    if not rows or rows[0].get("through_id") is None:
        return None
    row = rows[0]
    cutoff = row["cutoff_at"]
    if not isinstance(cutoff, dt.datetime):
        cutoff = dt.datetime.fromisoformat(str(cutoff))
    return Checkpoint(
        int(row["through_id"]),
        cutoff.replace(tzinfo=None),
        str(row["events_digest"]),
        str(row.get("inputs_digest") or ""),
        int(row.get(REPLAY_SEQUENCE_COLUMN) or 0),
    )


def next_sequence(con, checkpoint: Checkpoint | None) -> int:
    """This run's sequence number: one more than the previous run's.

    Without a checkpoint (a first run, or state lost) the numbers may still be out there: in the
    stored pools, and in what their readers kept (`SEQUENCE_READERS`). Counting on from the highest
    of those never hands a reader a number it already holds for rows that changed since.
    """
    if checkpoint is not None and checkpoint.replay_sequence > 0:
        return checkpoint.replay_sequence + 1
    highest = 0
    for relation in (f"{STATE_SCHEMA}.{ROW_POOLS_TABLE}", *SEQUENCE_READERS):
        try:
            stored = con.execute(f"select max({REPLAY_SEQUENCE_COLUMN}) from {relation}").fetchone()
        except Exception:  # not there, or stored before the sequence existed
            continue
        highest = max(highest, int(stored[0] or 0))
    return highest + 1


def plan_replay(
    con,
    cutoff_at: dt.datetime,
    digest_of_events: str,
    params: dict[str, object],
    force_full: bool = False,
) -> ResumePlan:
    """Decide how to replay, and leave the per-user digest (and dirty users) as temp tables."""
    stored = read_checkpoint(con)
    sequence = next_sequence(con, stored)
    checkpoint = None if force_full else stored
    reason = ""
    if force_full:
        reason = "a full replay was asked for"
    elif checkpoint is None:
        reason = "no previous replay state in the warehouse"
    elif checkpoint.replay_sequence == 0:
        reason = "the stored pools carry no replay sequence (stored by an earlier version)"
    elif checkpoint.events_digest != digest_of_events:
        reason = "the event catalog (an effect, a name or a service) changed since the previous run"
    elif checkpoint.cutoff_at > cutoff_at:
        reason = (
            f"the cut-off is earlier than the previous run's ({checkpoint.cutoff_at.isoformat()})"
        )
    through_id = checkpoint.through_id if checkpoint is not None and not reason else -1
    con.execute(DIGEST_SQL, sql.used_params(DIGEST_SQL, params | {"through_id": through_id}))
    if reason:
        return ResumePlan(MODE_FULL, reason, through_id, ReplayState.empty(), sequence=sequence)
    con.execute(DIRTY_USERS_SQL)
    dirty = int(con.execute(f"select count(*) from {DIRTY_USERS_TABLE}").fetchone()[0])
    fetched = con.execute(START_STATE_SQL).fetchnumpy()
    start = ReplayState.from_columns({k: np.asarray(v) for k, v in fetched.items()})
    return ResumePlan(
        MODE_RESUMED,
        f"resumed after ledger id {through_id}; {dirty} user(s) replayed again "
        "from their first row",
        through_id,
        start,
        dirty,
        sequence,
    )


def untouched_state_sql(plan: ResumePlan, replayed_users_table: str) -> str:
    """Stored state of the users this run did not replay (none on a full replay)."""
    columns = ", ".join(ReplayState.FIELDS)
    if not plan.resumed:
        return f"select {columns} from {replayed_users_table} where false"
    return (
        f"select {columns} from {STATE_SCHEMA}.{STATE_TABLE} "
        f"where user_id not in (select user_id from {replayed_users_table}) "
        f"and user_id not in (select user_id from {DIRTY_USERS_TABLE})"
    )


def untouched_flags_sql(plan: ResumePlan, flags_columns: str, empty_from: str) -> str:
    """Stored flagged rows that stay valid: those of users whose past did not change."""
    if not plan.resumed:
        return f"select {flags_columns} from {empty_from} where false"
    return (
        f"select {flags_columns} from {STATE_SCHEMA}.{FLAGS_TABLE} "
        f"where id <= $through_id and user_id not in (select user_id from {DIRTY_USERS_TABLE})"
    )


def row_pools_sql(plan: ResumePlan, table: str, replayed: str) -> str:
    """`table`: the pools around every ledger row — the rows this run replayed (`replayed`), and
    on a resumed run the stored rows of the users whose past did not change (their rows up to the
    checkpoint; a dirty user's stored rows are all replaced by its replay from the first row)."""
    statement = (
        f"create or replace temp table {table} as select *, "
        f"cast($replay_sequence as bigint) as {REPLAY_SEQUENCE_COLUMN} from {replayed}"
    )
    if not plan.resumed:
        return statement
    columns = ", ".join(
        ("credit_history_id", "user_id", *ROW_POOLS_COLUMNS.values(), REPLAY_SEQUENCE_COLUMN)
    )
    return (
        f"{statement} union all select {columns} from {STATE_SCHEMA}.{ROW_POOLS_TABLE} "
        f"where credit_history_id <= $through_id "
        f"and {USER_KEY} not in (select user_id from {DIRTY_USERS_TABLE})"
    )


def next_state_sql(state_table: str) -> str:
    """The state to store: every replayed user's state with the fingerprint of all its rows."""
    columns = ", ".join(f"s.{f}" for f in ReplayState.FIELDS)
    return f"""
create or replace temp table {NEXT_STATE_TABLE} as
select {columns}, d.id_sum_now as id_sum, d.digest_now as digest
from {state_table} as s
join {DIGEST_TABLE} as d on d.user_id = s.user_id
"""


NEXT_CHECKPOINT_SQL = f"""
create or replace temp table {NEXT_CHECKPOINT_TABLE} as
select
    cast(coalesce(max(last_id), -1) as bigint) as through_id,
    cast($cutoff_at as timestamp) as cutoff_at,
    cast($events_digest as varchar) as events_digest,
    cast($inputs_digest as varchar) as inputs_digest,
    cast($mode as varchar) as mode,
    cast(coalesce(sum(rows_now), 0) as bigint) as ledger_rows,
    cast($replay_sequence as bigint) as {REPLAY_SEQUENCE_COLUMN}
from {DIGEST_TABLE}
"""

# What each persisted table is replaced with, from this run's temp tables.
PERSIST_SOURCES = {
    STATE_TABLE: NEXT_STATE_TABLE,
    CHECKPOINT_TABLE: NEXT_CHECKPOINT_TABLE,
}


# An anomaly's identity across runs: its rule and key, NULLs made comparable (equality on a
# sentinel, so the join is a plain hash join on both engines).
DETECTION_KEY = (
    ("rule", "rule"),
    ("coalesce(user_id, $null_int)", "user_key"),
    ("coalesce(credit_history_id, $null_int)", "row_key"),
    ("coalesce(entity_type, '')", "entity_type_key"),
    ("coalesce(entity_id, $null_int)", "entity_key"),
)


def previous_detections_sql(stored: str, column: str) -> str:
    """The earliest detection of each (rule, key) in the stored anomalies, never after this cut-off.

    A key can appear twice in one run (`balance_drift` has a row per pool, both about the user):
    both rows take the earliest time, so the join never duplicates a row.
    """
    keys = ", ".join(f"{expr} as {alias}" for expr, alias in DETECTION_KEY)
    positions = ", ".join(str(i + 1) for i in range(len(DETECTION_KEY)))
    return f"""
create or replace temp table {PREVIOUS_DETECTIONS_TABLE} as
select {keys}, min({column}) as first_detected_at
from {stored}
where {column} <= cast($cutoff_at as timestamp)
group by {positions}
"""


EMPTY_DETECTIONS_SQL = f"""
create or replace temp table {PREVIOUS_DETECTIONS_TABLE} as
select {
    ", ".join(
        f"cast(null as {t}) as {alias}"
        for (_, alias), t in zip(
            DETECTION_KEY, ("varchar", "bigint", "bigint", "varchar", "bigint"), strict=True
        )
    )
},
    cast(null as timestamp) as first_detected_at
limit 0
"""


def detection_join(anomalies_alias: str, detections_alias: str) -> str:
    """The join condition between this run's anomalies and the previous detections."""
    return " and ".join(
        (
            expr.replace("(", f"({anomalies_alias}.", 1)
            if "(" in expr
            else f"{anomalies_alias}.{expr}"
        )
        + f" = {detections_alias}.{alias}"
        for expr, alias in DETECTION_KEY
    )


def prepare_previous_detections(con, stored: str, params: dict[str, object]) -> str:
    """Fill the previous-detections temp table from the stored anomalies; say where it came from.

    The stored table may not exist yet (first run), or predate `first_detected_at` (then its
    `detected_at` is the best knowledge there is).
    """
    for column in (FIRST_DETECTED_COLUMN, DETECTED_COLUMN):
        statement = previous_detections_sql(stored, column)
        try:
            con.execute(f"select {column} from {stored} limit 0").fetchall()
        except Exception:
            continue
        con.execute(statement, sql.used_params(statement, params))
        return column
    con.execute(EMPTY_DETECTIONS_SQL)
    return ""


def drop_working_tables(con) -> None:
    for name in (
        DIGEST_TABLE,
        DIRTY_USERS_TABLE,
        NEXT_STATE_TABLE,
        NEXT_CHECKPOINT_TABLE,
        PREVIOUS_DETECTIONS_TABLE,
    ):
        con.execute(f"drop table if exists {name}")
