"""Which users' ledger rows the per-user rules look at again on a resumed run.

Nine of the 13 rules (`PER_USER_RULES`) judge a ledger row by the row itself and by what sits next
to it: the event it names, whether its user is in `users` (or quarantined), the content row it
names, the cut-off, and earlier rows of the same user (same creditable, same month). Re-running
them over the whole ledger every day costs a scan, joins and windows over millions of rows for a
day's worth of change. The replay already keeps each user's fingerprint (`replay_state.py`), so a
resumed run knows which users' rows changed; this module adds what else the nine rules read, as of
the previous run, and derives the scope: the users whose rows the rules must read again.

A user is in scope when, since the run that stored the state:

- any of its rows changed, appeared or vanished (its fingerprint differs: every column the rules
  read is in it), or it has rows above the previous run's highest id;
- it entered or left `users`, or its quarantine (and reason) changed (`RULE_USERS_TABLE` holds the
  previous run's facts);
- one of its rows names a content row (alias, id) that appeared, vanished or changed owner
  (`RULE_CONTENT_TABLE` holds the previous run's content keys);
- one of its rows is dated after the previous run's cut-off (whether it is "after the cut-off"
  depends on the cut-off).

Every other user's anomalies of the nine rules are the ones stored by the previous run
(`RULE_ANOMALIES_TABLE`), kept as they are. What no user scope can decide is evaluated whole every
run, as before: `uncharged_content` (a content row and a charge may belong to different users),
`balance_drift` (one row per user from the pools) and the replay's `chain_break` and
`overdraft_writeoff` (kept by the replay's own state). A change to the event catalog, to the rules'
SQL or to the fingerprint (`inputs_digest`) evaluates all nine over the whole ledger again. The
contract (section 4) allows this as long as the result equals a recomputation over the whole
ledger; `credits_pipeline_tests/test_rule_scope.py` proves it on chains of daily runs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from credits_pipeline.ledger import replay_state as rs
from credits_pipeline.ledger import rules as sql
from credits_pipeline.ledger import rules_catalog as rc

# The rules whose anomalies a resumed run keeps for users out of scope (all but the four above).
PER_USER_RULES = (
    rc.EVENT_TYPE_MISMATCH,
    rc.PRICING_MISMATCH,
    rc.EXCESS_REFUND,
    rc.DOUBLE_CHARGE,
    rc.ORPHAN_USER,
    rc.ORPHAN_EVENT,
    rc.ORPHAN_CREDITABLE,
    rc.DUPLICATE_MONTHLY_RELEASE,
    rc.TIMESTAMP_ORDER,
)
assert set(PER_USER_RULES) == set(sql.ROW_RULE_SQL) - {rc.UNCHARGED_CONTENT}

# Persisted beside the replay state (`credits`), replaced with it in one transaction.
RULE_ANOMALIES_TABLE = "_rule_anomalies"
RULE_USERS_TABLE = "_rule_users"
RULE_CONTENT_TABLE = "_rule_content"
PERSISTED_TABLES = (RULE_ANOMALIES_TABLE, RULE_USERS_TABLE, RULE_CONTENT_TABLE)

# Working tables of one run.
USER_FACTS_TABLE = "_recon_user_facts"
NEXT_RULE_ANOMALIES_TABLE = "_recon_next_rule_anomalies"
SCOPE_TABLE = sql.RULE_SCOPE_TABLE
PERSIST_SOURCES = {
    RULE_ANOMALIES_TABLE: NEXT_RULE_ANOMALIES_TABLE,
    RULE_USERS_TABLE: USER_FACTS_TABLE,
    RULE_CONTENT_TABLE: sql.CONTENT_KEYS_TABLE,
}

_ANY_CUTOFF = dt.datetime(2000, 1, 1)  # `sql_params` needs one; the digest leaves it out

MODE_ALL = "all"
MODE_SCOPED = "scoped"


def _stored(name: str) -> str:
    return f"{rs.STATE_SCHEMA}.{name}"


# What `orphan_user` reads about a user id: in `users` or not, and its quarantine reason.
USER_FACTS_SQL = f"""
create or replace temp table {USER_FACTS_TABLE} as
with known as (
    select distinct id from {sql.USERS} where id is not null
),
quarantined as (
    select id, min(reason) as reason from {sql.QUARANTINED_USERS} where id is not null group by id
)
select
    coalesce(k.id, q.id) as user_id,
    k.id is not null as known,
    q.reason as quarantine_reason
from known as k
full outer join quarantined as q on q.id = k.id
"""

_CHANGED_USERS = f"""
select coalesce(f.user_id, s.user_id) as user_id
from {USER_FACTS_TABLE} as f
full outer join {_stored(RULE_USERS_TABLE)} as s on s.user_id = f.user_id
where f.user_id is null
    or s.user_id is null
    or f.known <> s.known
    or coalesce(f.quarantine_reason, '') <> coalesce(s.quarantine_reason, '')
    or (f.quarantine_reason is null) <> (s.quarantine_reason is null)
"""

_CHANGED_CONTENT = f"""
select coalesce(c.alias, s.alias) as alias, coalesce(c.id, s.id) as id
from {sql.CONTENT_KEYS_TABLE} as c
full outer join {_stored(RULE_CONTENT_TABLE)} as s on s.alias = c.alias and s.id = c.id
where c.id is null
    or s.id is null
    or coalesce(c.owner_id, $null_int) <> coalesce(s.owner_id, $null_int)
"""

# The users in scope (see the module docstring), each once.
SCOPE_SQL = f"""
create or replace temp table {SCOPE_TABLE} as
with changed_content as (
    {_CHANGED_CONTENT}
),
content_users as (
    select distinct coalesce(r.user_id, $null_int) as user_id
    from {sql.LEDGER_ROWS} as r
    join changed_content as k on k.alias = r.creditable_type and k.id = r.creditable_id
),
late_dated_users as (
    select distinct coalesce(user_id, $null_int) as user_id
    from {sql.LEDGER_ROWS}
    where created_at >= cast($previous_cutoff_at as timestamp) + interval 1 second
)
select user_id from {rs.DIGEST_TABLE} where rows_now > rows_before
union
select user_id from {rs.DIRTY_USERS_TABLE}
union
select user_id from ({_CHANGED_USERS}) as changed_users
union
select user_id from content_users
union
select user_id from late_dated_users
"""

KEPT_ANOMALIES_SQL = f"""
select {", ".join(sql.ANOMALY_COLUMNS)}
from {_stored(RULE_ANOMALIES_TABLE)}
where coalesce(user_id, $null_int) not in (select user_id from {SCOPE_TABLE})
"""


def next_rule_anomalies_sql(anomalies_table: str) -> str:
    """This run's anomalies of the per-user rules (kept and evaluated), to store for the next."""
    rules = ", ".join(f"'{code}'" for code in PER_USER_RULES)
    return f"""
create or replace temp table {NEXT_RULE_ANOMALIES_TABLE} as
select {", ".join(sql.ANOMALY_COLUMNS)}
from {anomalies_table}
where rule in ({rules})
"""


def inputs_digest(events: list[tuple]) -> str:
    """A digest of everything the per-user rules read that no user scope covers: the event
    catalog's rows (names, types, prices, minimums), the rules' SQL and parameters, and the row
    fingerprint's formula. When it changes, stored anomalies may be stale for every user."""
    params = {k: v for k, v in sql.sql_params(_ANY_CUTOFF).items() if k != "cutoff_at"}
    parts = [
        repr(sorted(events, key=repr)),
        repr(sorted(params.items())),
        rs.ROW_FINGERPRINT,
        sql.CONTENT_KEYS_SQL,
        sql.ROW_CHECKS_SQL,
        sql.CREDITED_SQL,
        USER_FACTS_SQL,
        *(sql.ROW_RULE_SQL[code] for code in PER_USER_RULES),
    ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class RuleScope:
    """How this run evaluates the per-user rules: over every row (`all`), or over the rows of
    `users` users (`scoped`), keeping the stored anomalies of everyone else."""

    mode: str
    reason: str
    users: int = 0

    @property
    def scoped(self) -> bool:
        return self.mode == MODE_SCOPED


def plan_rule_scope(con, plan: rs.ResumePlan, digest: str, params: dict[str, object]) -> RuleScope:
    """Decide the scope, and leave `SCOPE_TABLE` on the session when it is scoped.

    Needs the replay's plan (its digest and dirty users are temp tables by now) and the stored
    checkpoint's inputs digest and cut-off.
    """
    if not plan.resumed:
        return RuleScope(MODE_ALL, f"the replay is full ({plan.reason})")
    checkpoint = rs.read_checkpoint(con)
    if checkpoint is None or not rs.tables_exist(con, PERSISTED_TABLES):
        return RuleScope(MODE_ALL, "no stored anomalies of the per-user rules in the warehouse")
    if checkpoint.inputs_digest != digest:
        return RuleScope(
            MODE_ALL,
            "the event catalog, the rules or the row fingerprint changed since the previous run",
        )
    statement = SCOPE_SQL
    con.execute(
        statement,
        sql.used_params(statement, params | {"previous_cutoff_at": checkpoint.cutoff_at}),
    )
    users = int(con.execute(f"select count(*) from {SCOPE_TABLE}").fetchone()[0])
    return RuleScope(
        MODE_SCOPED,
        f"{users} user(s) evaluated again; the stored anomalies of every other user stand",
        users,
    )


def drop_working_tables(con) -> None:
    for name in (USER_FACTS_TABLE, NEXT_RULE_ANOMALIES_TABLE, SCOPE_TABLE):
        con.execute(f"drop table if exists {name}")
    con.execute(f"drop view if exists {sql.SCOPED_ROWS_TABLE}")
