"""Benchmark: the full reconciliation (replay + 13 rules) over 5,000,000 synthetic ledger rows.

The reconciliation runs on every materialization over the whole ledger, so its cost must stay in
proportion to what the warehouse itself needs to look at the ledger once. This script generates a
realistic ledger (vectorized numpy, consistent balances, a sprinkle of every anomaly) into a temp
DuckDB file, then measures, each in a fresh subprocess so peak RSS is honest (VmHWM of that
process): a plain DuckDB `lag()` window query over the same rows, materialized, and the full
`reconcile()` run. Target: reconcile <= 3x the lag query, peak RSS < 1.5 GB.

It also measures the daily case: the reconciliation of the newest "day" of rows (1/365 of the
ledger's ids) resuming from the replay state a run over the older rows stored, against a full
replay of the same ledger, and checks that both report the same rows.

    .venv/bin/python bench/reconcile.py [--rows 5000000] [--users 100000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# after the generated ledger's last row (ids * 5 s from 2025-01-01: ~376 days at 6.5 M rows), so
# that, as in production, the rows dated after the cut-off are a few anomalies, not the last days
# of every user (each such user is in every daily run's rule scope)
CUTOFF = dt.datetime(2026, 3, 1)
TARGET_RATIO = 3.0
TARGET_RSS_MB = 1536
DAYS_PER_YEAR = 365

LAG_SQL = """
create or replace temp table lag_out as
select
    id,
    previous_amount - lag(previous_amount) over (partition by user_id order by id) as delta
from ledger_rows
"""


def _peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- generation -----------------------------------------------------------------------------


def generate(path: Path, n_rows: int, n_users: int, seed: int = 7) -> dict[str, int]:
    """Write ledger_rows, events, users and the content tables into a DuckDB file."""
    import duckdb
    import pyarrow as pa

    from credits_pipeline.ledger.fixtures import catalog_events
    from credits_pipeline.source.catalog import CATALOG

    rng = np.random.default_rng(seed)
    names = [e.name for e in CATALOG]
    ev = {e.name: e for e in CATALOG}
    eid = {n: i + 1 for i, n in enumerate(names)}

    # Rows per user (every user gets >= 1 row), ids in write order, users interleaved in time.
    user_of = np.sort(rng.integers(1, n_users + 1, n_rows))
    user_of[:n_users] = np.arange(1, n_users + 1)
    user_of = np.sort(user_of)
    # Write order: ids 1..n dealt to rows at random, so users interleave in time; then each
    # user's rows are taken in id order (everything below is assigned in that order).
    ids = np.empty(n_rows, dtype=np.int64)
    ids[rng.permutation(n_rows)] = np.arange(1, n_rows + 1)
    ids = ids[np.lexsort((ids, user_of))]
    uid = user_of
    first = np.r_[True, uid[1:] != uid[:-1]]

    # Event mix: a user's first row is a reset; then spends, monthly adds, purchases, resets.
    spend_names = [n for n in names if ev[n].effect == "spend"]
    pick = rng.random(n_rows)
    kind = np.where(pick < 0.80, 4, np.where(pick < 0.90, 2, np.where(pick < 0.95, 3, 1)))
    kind[first] = 1
    event_name_idx = np.empty(n_rows, dtype=np.int64)
    spend_choice = rng.integers(0, len(spend_names), n_rows)
    spend_ids = np.array([eid[n] for n in spend_names])
    event_name_idx[:] = spend_ids[spend_choice]
    event_name_idx[kind == 2] = np.where(
        rng.random(n_rows) < 0.05, eid["monthly_credits_added"], eid["admin_credit_added"]
    )[kind == 2]
    event_name_idx[kind == 3] = eid["custom_credit_purchased"]
    event_name_idx[kind == 1] = eid["subscription_amount_paid"]

    # Pricing, exactly as the application does it in doubles.
    value = np.array([0.0] + [float(ev[n].value) for n in names])[event_name_idx]
    calc = np.array([""] + [ev[n].calculation_type for n in names])[event_name_idx]
    min_amount = np.array([0.0] + [float(ev[n].min_amount or 0) for n in names])[event_name_idx]
    index = rng.integers(1, 60, n_rows).astype(np.int64)
    need_min = kind == 4
    index = np.where(
        need_min & (calc == "calculative"),
        np.maximum(index, np.ceil(2 * min_amount / np.maximum(value, 1e-9))).astype(np.int64),
        index,
    )
    index = np.where(kind == 1, 100_000, index)
    index = np.where(kind == 3, 500, index)
    index = np.where(kind == 2, 1000, index)
    amount = np.where(
        calc == "fixed",
        value,
        np.where(kind == 4, np.ceil(value * (index / 2.0)), np.ceil(value * index)),
    )
    amount = np.where((kind == 1) | (kind == 3), index, amount).astype(np.int64)

    # Balances: subscription pool by segments between resets; purchased pool by cumulative sum.
    seg = np.cumsum(kind == 1)
    delta = np.where(kind == 4, -amount, amount)
    delta = np.where(kind == 3, 0, delta)
    csum = np.cumsum(delta)
    seg_first = np.r_[True, seg[1:] != seg[:-1]]
    base = np.maximum.accumulate(np.where(seg_first, csum - delta, np.iinfo(np.int64).min))
    pool_after = csum - base
    prev_sub = pool_after - delta
    prev_reset = np.r_[0, pool_after[:-1]]
    prev_sub = np.where(kind == 1, np.where(first, 0, prev_reset), prev_sub)
    pur_delta = np.where(kind == 3, amount, 0)
    pcs = np.cumsum(pur_delta)
    ubase = np.maximum.accumulate(np.where(first, pcs - pur_delta, np.iinfo(np.int64).min))
    pur_after = pcs - ubase
    previous = np.where(kind == 3, pur_after, prev_sub).astype(np.int64)
    last = np.r_[uid[1:] != uid[:-1], True]
    final_sub = pool_after[last]
    final_pur = pur_after[last]

    # Creditables: faceless spends name a faceless of the same user.
    ctype = np.full(n_rows, None, dtype=object)
    cid = np.zeros(n_rows, dtype=np.int64)
    is_faceless = event_name_idx == eid["faceless_video_generated"]
    ctype[is_faceless] = "faceless"
    cid[is_faceless] = np.arange(1, int(is_faceless.sum()) + 1)
    cid_valid = is_faceless.copy()

    created = np.datetime64("2025-01-01T00:00:00") + (ids * 5).astype("timedelta64[s]")

    # Anomalies, ~0.02% each.
    k = max(1, n_rows // 5000)
    hit = rng.choice(n_rows, size=k, replace=False)
    previous[hit[: k // 2]] += 7  # chain breaks
    amount[hit[k // 2 :]] += 1  # pricing mismatches (+ chain breaks)
    ev_type = np.array([0] + [ev[n].type for n in names])[event_name_idx].astype(np.int32)
    ev_type[rng.choice(n_rows, size=k, replace=False)] ^= 3  # event_type mismatches
    orphan_users = rng.choice(n_rows, size=k // 4, replace=False)
    late = rng.choice(n_rows, size=k // 4, replace=False)
    created[late] = created[late] - np.timedelta64(86400 * 30, "s")  # out of order

    ledger = pa.table(
        {
            "id": pa.array(ids),
            "user_id": pa.array(uid),
            "credit_events_id": pa.array(event_name_idx),
            "creditable_type": pa.array(ctype, pa.string()),
            "creditable_id": pa.array(cid, mask=~cid_valid),
            "calculative_index": pa.array(index),
            "amount": pa.array(amount),
            "previous_amount": pa.array(previous.astype(np.float64)),
            "event_type": pa.array(ev_type),
            "created_at": pa.array(created),
            "updated_at": pa.array(created),
        }
    )
    n_faceless = int(is_faceless.sum())
    facelesses = pa.table(
        {
            "id": pa.array(np.arange(1, n_faceless + 1)),
            "user_id": pa.array(uid[is_faceless]),
            "video_id": pa.array(np.arange(1, n_faceless + 1)),
        }
    )
    videos = pa.table(
        {
            "id": pa.array(np.arange(1, n_faceless + 1)),
            "user_id": pa.array(uid[is_faceless]),
            "type": pa.array(np.full(n_faceless, "faceless", dtype=object), pa.string()),
            "status": pa.array(np.full(n_faceless, "completed", dtype=object), pa.string()),
        }
    )
    users_sub = final_sub.copy()
    users_sub[rng.choice(len(users_sub), size=max(1, len(users_sub) // 1000), replace=False)] += 3
    users = pa.table(
        {
            "id": pa.array(np.unique(uid)),
            "remaining_credit_amount": pa.array(users_sub),
            "extra_credits": pa.array(final_pur),
        }
    )
    with duckdb.connect(str(path)) as con:
        con.register("ledger_arrow", ledger)
        # Stored in write (id) order, as an append-only ledger loaded day by day is.
        con.execute("create table ledger_rows as select * from ledger_arrow order by id")
        con.execute(
            "update ledger_rows set user_id = user_id + 10000000 where id in (select unnest(?))",
            [ids[orphan_users].tolist()],
        )
        ev_rows = catalog_events()
        con.execute(
            "create table events (id bigint, name varchar, type integer, "
            "calculation_type varchar, value double, min_amount double)"
        )
        con.executemany(
            "insert into events values (?, ?, ?, ?, ?, ?)", [tuple(e.values()) for e in ev_rows]
        )
        for name, table in (("users", users), ("facelesses", facelesses), ("videos", videos)):
            con.register("t_arrow", table)
            con.execute(f"create table {name} as select * from t_arrow")
            con.unregister("t_arrow")
        con.execute("create table real_clones (id bigint, user_id bigint, status varchar)")
        con.execute("create table speeches (id bigint, user_id bigint, status varchar)")
        con.execute("create table quarantined_users (id bigint, reason varchar)")
        con.execute("checkpoint")
        return {
            "rows": con.execute("select count(*) from ledger_rows").fetchone()[0],
            "users": len(users),
        }


# --- measurements (each in its own process) -------------------------------------------------


def measure(kind: str, path: str) -> dict:
    import duckdb

    if kind in ("reconcile", "resume"):
        from credits_pipeline.ledger.reconcile import (  # numba cache loaded here
            REPORT_RELATIONS,
            drop_working_tables,
            reconcile,
        )
        from credits_pipeline.ledger.store import write_reconciliation
    con = duckdb.connect(path, read_only=False)
    con.execute("set timezone = 'UTC'")
    start = time.perf_counter()
    out: dict = {}
    if kind == "lag":
        con.execute(LAG_SQL)
        out["rows"] = con.execute("select count(*) from lag_out").fetchone()[0]
    elif kind == "resume":
        con.execute("alter table ledger_rows rename to ledger_all")
        max_id = con.execute("select max(id) from ledger_all").fetchone()[0]
        yesterday = int(max_id * (1 - 1 / DAYS_PER_YEAR))  # ids grow with time
        con.execute(f"create view ledger_rows as select * from ledger_all where id <= {yesterday}")
        previous = reconcile(con, CUTOFF, keep_state=True)
        write_reconciliation(con, previous)
        drop_working_tables(con)
        con.execute("create or replace view ledger_rows as select * from ledger_all")
        start = time.perf_counter()
        resumed = reconcile(con, CUTOFF, keep_state=True)
        out["seconds"] = time.perf_counter() - start
        out["replayed_rows"] = resumed.replayed_rows
        out["mode"] = resumed.replay_mode
        out["timings"] = resumed.timings
        out["rules_mode"] = resumed.rules_mode
        out["rule_scope_users"] = resumed.rule_scope_users
        write_start = time.perf_counter()
        con.execute("begin")
        write_reconciliation(con, resumed)
        con.execute("rollback")  # the full run below must resume from the same stored state
        out["write_seconds"] = time.perf_counter() - write_start
        for name, relation in REPORT_RELATIONS.items():  # kept for the comparison below
            con.execute(f"create temp table _bench_resumed_{name} as select * from {relation}")
        drop_working_tables(con)
        start = time.perf_counter()
        full = reconcile(con, CUTOFF)
        out["full_seconds"] = time.perf_counter() - start
        out["full_timings"] = full.timings
        out["rows"] = full.ledger_rows
        out["same_report"] = all(  # compared in the warehouse: the reports never leave it
            con.execute(
                f"select (select count(*) from {relation}) = "
                f"(select count(*) from _bench_resumed_{name}) and not exists "
                f"(select * from {relation} except all select * from _bench_resumed_{name})"
            ).fetchone()[0]
            for name, relation in REPORT_RELATIONS.items()
        )
        out["peak_rss_mb"] = _peak_rss_mb()
        con.close()
        return out
    else:
        result = reconcile(con, CUTOFF)
        out["rows"] = result.ledger_rows
        out["anomalies"] = result.anomaly_rows
        out["users"] = result.users
        out["by_rule"] = {c: s.count for c, s in result.summaries.items()}
        out["timings"] = result.timings
    out["seconds"] = time.perf_counter() - start
    out["peak_rss_mb"] = _peak_rss_mb()
    con.close()
    return out


def _child(kind: str, path: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--measure", kind, "--db", path],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--measure", choices=("lag", "reconcile", "resume", "generate"))
    parser.add_argument("--db")
    args = parser.parse_args()
    if args.measure == "generate":
        info = generate(Path(args.db), args.rows, args.users)
        info["peak_rss_mb"] = _peak_rss_mb()
        print(json.dumps(info))
        return
    if args.measure:
        print(json.dumps(measure(args.measure, args.db), default=str))
        return

    with tempfile.TemporaryDirectory(prefix="bench_reconcile_") as tmp:
        db = str(Path(tmp) / "bench.duckdb")
        t0 = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--measure",
                "generate",
                "--db",
                db,
                "--rows",
                str(args.rows),
                "--users",
                str(args.users),
            ],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"generated {info['rows']:,} ledger rows for {info['users']:,} users "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import credits_pipeline.ledger.replay"], check=True, cwd=ROOT
        )
        print(f"numba import/compile (cached after first run): {time.perf_counter() - t0:.2f} s")
        lag_runs, rec_runs = [], []
        for _ in range(args.repeat):
            lag_runs.append(_child("lag", db))
            rec_runs.append(_child("reconcile", db))
        lag = min(lag_runs, key=lambda r: r["seconds"])
        rec = min(rec_runs, key=lambda r: r["seconds"])
        ratio = rec["seconds"] / lag["seconds"]
        peak = max(r["peak_rss_mb"] for r in rec_runs)
        print(
            f"lag() window query : {lag['seconds']:.2f} s   peak RSS {lag['peak_rss_mb']:.0f} MiB"
        )
        print(
            f"reconcile()        : {rec['seconds']:.2f} s   peak RSS {peak:.0f} MiB   "
            f"({rec['anomalies']:,} anomalies, {rec['users']:,} users)"
        )
        print(
            f"ratio              : {ratio:.2f}x  (target <= {TARGET_RATIO:.0f}x)   "
            f"RSS target < {TARGET_RSS_MB} MiB: {'met' if peak < TARGET_RSS_MB else 'MISSED'}"
        )
        print("reconcile stages (s):", json.dumps(rec["timings"]))
        print("anomalies by rule   :", json.dumps(rec["by_rule"]))
        daily = _child("resume", db)
        print(
            f"daily run, resumed : {daily['seconds']:.2f} s ({daily['replayed_rows']:,} rows "
            f"replayed, mode {daily['mode']}; replay stage {daily['timings']['replay']:.2f} s) vs "
            f"full {daily['full_seconds']:.2f} s (replay stage "
            f"{daily['full_timings']['replay']:.2f} s); same report: {daily['same_report']}"
        )
        met = ratio <= TARGET_RATIO and peak < TARGET_RSS_MB and daily["same_report"]
        print(
            f"daily run, stored  : {daily['write_seconds']:.2f} s to write both reports, the "
            "row pools and the next state"
        )
        print(
            f"daily run, rules   : {daily['rules_mode']}, {daily['rule_scope_users']:,} users "
            "evaluated again"
        )
        print("daily stages (s)    :", json.dumps(daily["timings"]))
        print("TARGET MET" if met else "TARGET MISSED")


if __name__ == "__main__":
    main()
