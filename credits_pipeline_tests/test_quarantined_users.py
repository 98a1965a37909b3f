"""A user quarantined by the extraction is reported as quarantined, never as "not in users".

A `users` row the warehouse cannot hold (text in a pool column) goes to `raw.users__rejected`.
The user exists in the source, so the rules must say so: every ledger row of that user is still an
`orphan_user` (the contract's code for a row whose user is not in the loaded `users`) but its detail
names the quarantine, the reason, and that the user is not reconciled. The user gets no row in
`marts.user_balance_reconciliation`: its stored pools are exactly what could not be read, and a row
would have to invent them or a status the contract does not define.
"""

from __future__ import annotations

import datetime as dt
import sqlite3

import duckdb

from credits_pipeline.ledger import rules_catalog as rc
from credits_pipeline.ledger.fixtures import ledger_row as row
from credits_pipeline.ledger.fixtures import load_inputs
from credits_pipeline.ledger.reconcile import reconcile
from credits_pipeline.ledger.store import read_reports
from credits_pipeline_tests.cli_run import materialize, warehouse_rows

CUTOFF = dt.datetime(2025, 6, 1)


def _anomalies(quarantined_users=()):
    con = duckdb.connect()
    con.execute("set timezone = 'UTC'")
    load_inputs(
        con,
        rows=[
            row(1, 1, "subscribe_to_trial", 500, 0),
            row(2, 5, "subscribe_to_trial", 500, 0),
            row(3, 5, "idea_discovered", 15, 500),
            row(4, 7, "subscribe_to_trial", 500, 0),
        ],
        users=[(1, 500, 0)],
        quarantined_users=quarantined_users,
    )
    result = read_reports(con, reconcile(con, CUTOFF))
    return result, {
        a["credit_history_id"]: a
        for a in result.anomalies.to_pylist()
        if a["rule"] == rc.ORPHAN_USER
    }


def test_rows_of_a_quarantined_user_name_the_quarantine_and_its_reason():
    reason = "remaining_credit_amount: 'twelve' is not an integer"
    result, orphans = _anomalies([{"id": 5, "reason": reason}])
    assert sorted(orphans) == [2, 3, 4]
    for history_id in (2, 3):
        detail = orphans[history_id]["detail"]
        assert detail.startswith(
            f"user 5 was quarantined in raw.users__rejected: {reason}; not reconciled"
        )
        assert "is not in users" not in detail
    assert orphans[4]["detail"] == "user 7 is not in users"  # a user truly missing stays as it was
    assert [r["user_id"] for r in result.reconciliation.to_pylist()] == [1]


def test_without_quarantined_users_the_detail_is_unchanged():
    _, orphans = _anomalies()
    assert {a["detail"] for a in orphans.values()} == {
        "user 5 is not in users",
        "user 7 is not in users",
    }


# -- end to end: a demo whose users table holds a row the warehouse cannot hold ------------------


def test_a_demo_user_quarantined_by_the_extraction_is_named_in_every_anomaly_of_its_rows(tmp_path):
    from credits_pipeline.source.demo import generate

    source = tmp_path / "syllaby_v2.sqlite"
    generate(f"sqlite:///{source}", users=60, seed=5, months=6)
    with sqlite3.connect(source) as db:
        (user_id,) = db.execute(
            "select user_id from credit_histories group by user_id order by count(*) desc limit 1"
        ).fetchone()
        rows_of_user = db.execute(
            "select count(*) from credit_histories where user_id = ?", [user_id]
        ).fetchone()[0]
        db.execute("update users set extra_credits = 'twelve' where id = ?", [user_id])
    run = materialize(tmp_path, f"sqlite:///{source}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    wh = tmp_path / "warehouse.duckdb"
    [(reason,)] = warehouse_rows(
        wh, "select _reason from raw.users__rejected where id = ?", [str(user_id)]
    )
    assert "extra_credits" in reason
    details = warehouse_rows(
        wh,
        "select rule, detail from marts.ledger_anomalies where user_id = ? and rule = ?",
        [user_id, rc.ORPHAN_USER],
    )
    assert len(details) == rows_of_user
    assert all(
        d.startswith(f"user {user_id} was quarantined in raw.users__rejected: {reason}")
        for _, d in details
    )
    assert not warehouse_rows(
        wh, "select * from marts.ledger_anomalies where detail like '%is not in users%'"
    )
    assert not warehouse_rows(
        wh, "select * from marts.user_balance_reconciliation where user_id = ?", [user_id]
    )
