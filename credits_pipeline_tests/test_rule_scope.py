"""A resumed run evaluates the per-user rules only for the users whose inputs changed, and reports
exactly what a reconciliation over the whole ledger reports.

The ledgers here are random and messy on purpose: charges on content of the user and of others,
refunds with and without a creditable, charges repeated within a minute, duplicate monthly
releases, unknown events, wrong prices, users missing from `users` or quarantined, NULL, future
and out-of-order timestamps. Between two runs the source changes the way a real one does: new
rows, a late row below the previous run's highest id, old rows rewritten in place (each column the
rules read) and deleted, users added and quarantined, content created, deleted, given to another
user and completed, the cut-off moved past rows dated in the future, an event's price changed.
After every run both stored reports must equal those of one reconciliation from scratch.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pytest

from credits_pipeline.ledger import replay_state as rs
from credits_pipeline.ledger import rule_scope as rsc
from credits_pipeline.ledger import rules_catalog as rc
from credits_pipeline.ledger.fixtures import BASE_TIME, catalog_events, load_inputs
from credits_pipeline.ledger.fixtures import ledger_row as row
from credits_pipeline.ledger.reconcile import drop_working_tables, reconcile
from credits_pipeline.ledger.replay_state import STATE_SCHEMA
from credits_pipeline.ledger.store import read_reports, write_reconciliation
from credits_pipeline_tests.test_ledger_resume import warehouse_con  # noqa: F401

N_USERS = 24
ORPHAN_USER = 90  # never in users at first
QUARANTINED_USER = 91
# Users with rows on the first day only, so nothing but the change made to them on purpose puts
# them in a later run's scope: their rows are rewritten and deleted, they enter and leave `users`,
# their quarantine changes. QUIET_ORPHAN starts outside `users`.
QUIET_USERS = tuple(range(101, 110))
REWRITTEN_USERS = QUIET_USERS[:6]
QUIET_ORPHAN, QUIET_LEAVING, QUIET_QUARANTINED = QUIET_USERS[6:]
CONTENT_KINDS = {  # alias -> (input relation, charging event)
    "faceless": ("facelesses", "faceless_video_generated"),
    "video": ("videos", "video_generated"),
    "real-clone": ("real_clones", "real_clone_generated"),
    "speech": ("speeches", "text_to_speech_generated"),
}
OTHER_EVENTS = (
    "monthly_credits_added",
    "custom_credit_purchased",
    "subscription_amount_paid",
    "ai_image_generated",
    "idea_discovered",
)


def random_content(rng: np.random.Generator, per_kind: int = 30) -> dict[str, list[dict]]:
    """Content rows of every kind, owned by random users, some completed."""
    content: dict[str, list[dict]] = {relation: [] for relation, _ in CONTENT_KINDS.values()}
    for k in range(1, per_kind + 1):
        owner = int(rng.integers(1, N_USERS + 1))
        status = "completed" if rng.random() < 0.6 else "rendering"
        content["videos"].append(
            {"id": k, "user_id": owner, "type": "custom" if k % 2 else "faceless", "status": status}
        )
        content["facelesses"].append({"id": k, "user_id": owner, "video_id": k})
        content["real_clones"].append({"id": k, "user_id": owner, "status": status})
        content["speeches"].append({"id": k, "user_id": owner, "status": status})
    return content


def random_rows(
    rng: np.random.Generator, n_rows: int, first_id: int = 1, users: tuple[int, ...] = ()
) -> list[dict]:
    """Ledger rows of every kind the rules judge, ids ascending with gaps (by `users` if given)."""
    rows = []
    for k in range(n_rows):
        row_id = (first_id + k) * 4
        user = int(rng.choice(users)) if users else int(rng.integers(1, N_USERS + 1))
        draw = 1.0 if users else rng.random()
        if draw < 0.02:
            user = ORPHAN_USER
        elif draw < 0.04:
            user = QUARANTINED_USER
        kind = rng.random()
        created = BASE_TIME + dt.timedelta(minutes=row_id)
        options: dict = {}
        if kind < 0.45:
            alias = list(CONTENT_KINDS)[int(rng.integers(0, 4))]
            event = CONTENT_KINDS[alias][1]
            amount = int(rng.integers(20, 80))
            options["creditable"] = (alias, int(rng.integers(1, 36)))  # ids above 30: missing
        elif kind < 0.55:
            event, amount = "refunded_credits", int(rng.integers(5, 60))
            if rng.random() < 0.8:
                options["creditable"] = (
                    list(CONTENT_KINDS)[int(rng.integers(0, 4))],
                    int(rng.integers(1, 31)),
                )
        elif kind < 0.58:
            event, amount = 999, int(rng.integers(1, 50))  # an event missing from credit_events
        else:
            event = OTHER_EVENTS[int(rng.integers(0, len(OTHER_EVENTS)))]
            amount = int(rng.integers(1, 300))
        if rng.random() < 0.05:
            options["index"] = int(rng.integers(1, 500))  # a price the event does not give
        if rng.random() < 0.04:
            options["event_type"] = 3 - (1 if rng.random() < 0.5 else 2)
        timing = rng.random()
        if timing < 0.03:
            created = None
        elif timing < 0.06:
            created = created - dt.timedelta(days=int(rng.integers(1, 40)))  # before earlier rows
        elif timing < 0.08:
            created = created + dt.timedelta(days=400)  # after every cut-off but the last
        elif timing < 0.12:
            created = rows[-1]["created_at"] if rows and rows[-1]["created_at"] else created
        updated = created
        if created is not None and rng.random() < 0.03:
            updated = created - dt.timedelta(hours=2)
        previous = int(rng.integers(0, 500)) if rng.random() < 0.5 else None
        rows.append(
            row(row_id, user, event, amount, previous, created_at=created, updated_at=updated)
        )
        if "creditable" in options:
            rows[-1]["creditable_type"], rows[-1]["creditable_id"] = options["creditable"]
        if "index" in options:
            rows[-1]["calculative_index"] = options["index"]
        if "event_type" in options:
            rows[-1]["event_type"] = options["event_type"]
    return rows


class Source:
    """The reconciliation's inputs as a source changes them day by day."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.rows = random_rows(self.rng, 500)
        quiet = random_rows(self.rng, 180, first_id=1000, users=QUIET_USERS)
        for r in quiet:  # ids among the others', below every later day's
            r["id"] = r["id"] - 4000 + 2
        self.rows = sorted(self.rows + quiet, key=lambda r: r["id"])
        self.users = [
            (u, int(self.rng.integers(0, 900)), 0)
            for u in (*range(1, N_USERS + 1), *QUIET_USERS)
            if u not in (QUIET_ORPHAN, QUIET_QUARANTINED)
        ]
        self.quarantined = [
            {"id": QUARANTINED_USER, "reason": "remaining_credit_amount: not an int"},
            {"id": QUIET_QUARANTINED, "reason": "remaining_credit_amount: not an int"},
        ]
        self.day = 0
        self.content = random_content(self.rng)
        self.events = catalog_events()
        self.cutoff = dt.datetime(2026, 1, 1)

    def inputs(self) -> dict:
        return {
            "rows": self.rows,
            "users": self.users,
            "events": self.events,
            "quarantined_users": self.quarantined,
            **self.content,
        }

    def next_day(self) -> None:
        """New rows, a late row, rewrites and deletions, and changes around the ledger."""
        rng = self.rng
        top = max(r["id"] for r in self.rows) // 4
        self.rows += random_rows(rng, 60, first_id=top + 1)
        late = random_rows(rng, 1, first_id=int(rng.integers(1, top)))[0]
        late["id"] += 1  # between two existing ids: a row committed late
        self.rows.append(late)
        self.day += 1
        # one change per quiet user (which user gets which change rotates with the day), each a
        # change the rules see: a missing creditable id, an unknown alias, a price index, an
        # update before the creation, an event type, a deletion
        rewrites = (
            (lambda r: r["creditable_type"] is not None, {"creditable_id": 33}),
            (lambda r: r["creditable_type"] is not None, {"creditable_type": "thumbnail"}),
            (lambda r: True, {"calculative_index": int(rng.integers(1, 900))}),
            (lambda r: r["created_at"] is not None, {"updated_at": dt.datetime(2024, 1, 1)}),
            (lambda r: True, {"event_type": 7}),
            (lambda r: True, None),
        )
        shift = self.day % len(REWRITTEN_USERS)
        targets = REWRITTEN_USERS[shift:] + REWRITTEN_USERS[:shift]
        for user, (fits, change) in zip(targets, rewrites, strict=True):
            candidates = [i for i, r in enumerate(self.rows) if r["user_id"] == user and fits(r)]
            i = int(rng.choice(candidates))
            if change is None:
                del self.rows[i]
            else:
                self.rows[i] = self.rows[i] | change
        # users: on alternate days the quiet orphan or another quiet user enters or leaves
        # `users`, and the quiet quarantined user's reason changes
        toggled = QUIET_ORPHAN if self.day % 2 else QUIET_LEAVING
        if any(u[0] == toggled for u in self.users):
            self.users = [u for u in self.users if u[0] != toggled]
        else:
            self.users.append((toggled, 0, 0))
        self.quarantined = [
            q | {"reason": f"extra_credits: not an int (day {self.day})"}
            if q["id"] == QUIET_QUARANTINED
            else q
            for q in self.quarantined
        ]
        # content: one deleted, one given to another user, one completed, one created
        videos = self.content["videos"]
        del self.content["facelesses"][int(rng.integers(0, len(self.content["facelesses"])))]
        moved = int(rng.integers(0, len(self.content["speeches"])))
        self.content["speeches"][moved] = self.content["speeches"][moved] | {
            "user_id": int(rng.integers(1, N_USERS + 1))
        }
        done = int(rng.integers(0, len(videos)))
        videos[done] = videos[done] | {"status": "completed"}
        new_id = max(c["id"] for c in self.content["real_clones"]) + 1
        self.content["real_clones"].append(
            {"id": new_id, "user_id": int(rng.integers(1, N_USERS + 1)), "status": "completed"}
        )
        self.cutoff += dt.timedelta(days=1)


def stored_run(con, source: Source):
    """One daily run on the warehouse `con`: reconcile with the stored state, store, read back."""
    load_inputs(con, **source.inputs())
    result = reconcile(con, source.cutoff, keep_state=True)
    write_reconciliation(con, result)
    reports = read_reports(con, result)
    drop_working_tables(con)
    return reports


def from_scratch(source: Source):
    con = duckdb.connect()
    con.execute("set timezone = 'UTC'")
    load_inputs(con, **source.inputs())
    reports = read_reports(con, reconcile(con, source.cutoff))
    con.close()
    return reports


def assert_same_reports(resumed, full) -> None:
    """Same rows in the same order; `first_detected_at` aside (a run from scratch has no past)."""
    first_detected = rs.FIRST_DETECTED_COLUMN
    assert resumed.anomalies.drop([first_detected]).to_pylist() == (
        full.anomalies.drop([first_detected]).to_pylist()
    )
    assert resumed.reconciliation.to_pylist() == full.reconciliation.to_pylist()


@pytest.fixture
def warehouse(warehouse_con):
    """A DuckDB warehouse for a chain of runs (the resume tests' fixture)."""
    return warehouse_con


@pytest.mark.parametrize("seed", range(4))
def test_a_chain_of_daily_runs_with_scoped_rules_reports_what_the_whole_ledger_reports(
    warehouse, seed
):
    source = Source(seed)
    first = stored_run(warehouse, source)
    assert first.result.rules_mode == rsc.MODE_ALL
    assert_same_reports(first, from_scratch(source))
    for _ in range(4):
        source.next_day()
        resumed = stored_run(warehouse, source)
        assert resumed.result.rules_mode == rsc.MODE_SCOPED, resumed.result.rules_reason
        assert 0 < resumed.result.rule_scope_users <= N_USERS + len(QUIET_USERS) + 2
        assert_same_reports(resumed, from_scratch(source))
    counts = {code: s.count for code, s in resumed.result.summaries.items()}
    # the ledger exercises the rules the scope keeps or evaluates again
    for code in (
        rc.EVENT_TYPE_MISMATCH,
        rc.PRICING_MISMATCH,
        rc.EXCESS_REFUND,
        rc.ORPHAN_USER,
        rc.ORPHAN_EVENT,
        rc.ORPHAN_CREDITABLE,
        rc.DUPLICATE_MONTHLY_RELEASE,
        rc.TIMESTAMP_ORDER,
        rc.UNCHARGED_CONTENT,
    ):
        assert counts[code] > 0, code


def test_a_day_that_touches_two_users_evaluates_the_rules_for_those_two_only(warehouse):
    rows = [
        row(10, 1, "monthly_credits_added", 100, 0),
        row(20, 1, "monthly_credits_added", 100, 100),  # a duplicate release: kept, not re-read
        row(30, 2, "ai_image_generated", 5, 0),  # an overdraft
        row(40, 3, 999, 7, 0),  # an unknown event
        row(50, 4, "custom_credit_purchased", 10, 10),
    ]
    users = [(u, 0, 0) for u in range(1, 5)]
    load_inputs(warehouse, rows=rows, users=users)
    write_reconciliation(warehouse, reconcile(warehouse, dt.datetime(2026, 1, 1), keep_state=True))
    drop_working_tables(warehouse)

    day_two = [*rows, row(60, 3, "monthly_credits_added", 5, 0), row(70, 4, 999, 1, 10)]
    load_inputs(warehouse, rows=day_two, users=users)
    result = reconcile(warehouse, dt.datetime(2026, 1, 2), keep_state=True)
    assert result.rules_mode == rsc.MODE_SCOPED
    assert result.rule_scope_users == 2
    in_scope = warehouse.execute(f"select user_id from {rsc.SCOPE_TABLE} order by 1").fetchall()
    assert in_scope == [(3,), (4,)]
    assert result.summaries[rc.DUPLICATE_MONTHLY_RELEASE].count == 1  # user 1's, kept
    assert result.summaries[rc.ORPHAN_EVENT].count == 2  # user 3's kept, user 4's new


def test_a_changed_event_price_evaluates_every_users_rules_again(warehouse):
    source = Source(7)
    stored_run(warehouse, source)
    source.next_day()
    source.events = [
        e | {"min_amount": 40.0} if e["name"] == "video_generated" else e for e in source.events
    ]
    changed = stored_run(warehouse, source)
    assert changed.result.rules_mode == rsc.MODE_ALL
    assert "event catalog" in changed.result.rules_reason
    assert_same_reports(changed, from_scratch(source))


def test_a_warehouse_without_the_rules_stored_anomalies_evaluates_every_users_rules(warehouse):
    source = Source(8)
    stored_run(warehouse, source)
    warehouse.execute(f"drop table {STATE_SCHEMA}.{rsc.RULE_ANOMALIES_TABLE}")
    source.next_day()
    again = stored_run(warehouse, source)
    assert again.result.rules_mode == rsc.MODE_ALL
    assert "no stored anomalies" in again.result.rules_reason
    assert_same_reports(again, from_scratch(source))
    source.next_day()
    assert stored_run(warehouse, source).result.rules_mode == rsc.MODE_SCOPED


def test_the_kept_anomalies_are_the_stored_ones_not_a_fresh_evaluation(warehouse):
    """Proof the scope is used: the stored anomalies of users out of scope are reported as stored
    (here deliberately tampered with), which no evaluation would report; those in scope are
    evaluated again."""
    source = Source(9)
    stored_run(warehouse, source)
    warehouse.execute(
        f"update {STATE_SCHEMA}.{rsc.RULE_ANOMALIES_TABLE} set detail = 'tampered' "
        f"where rule = '{rc.ORPHAN_EVENT}'"
    )
    load_inputs(warehouse, **source.inputs())
    result = reconcile(warehouse, source.cutoff, keep_state=True)
    assert result.rules_mode == rsc.MODE_SCOPED
    in_scope = {
        u for (u,) in warehouse.execute(f"select user_id from {rsc.SCOPE_TABLE}").fetchall()
    }
    orphan_events = [
        a
        for a in read_reports(warehouse, result).anomalies.to_pylist()
        if a["rule"] == rc.ORPHAN_EVENT
    ]
    kept = [a for a in orphan_events if a["user_id"] not in in_scope]
    evaluated = [a for a in orphan_events if a["user_id"] in in_scope]
    assert kept and evaluated
    assert {a["detail"] for a in kept} == {"tampered"}
    assert "tampered" not in {a["detail"] for a in evaluated}
