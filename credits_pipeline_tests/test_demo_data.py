"""The demo generator writes a database the contract's rules accept — or reject exactly as told.

These checks re-derive contract sections 2, 3 and 5 in a few dozen lines of their own (not the
pipeline's replay, not the generator's bookkeeping), so that a mistake in either shows up as a
disagreement: a clean database must have no violation and every user must reconcile; an
`--anomalies` database must have exactly the violations its manifest lists.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections import defaultdict
from pathlib import Path

import pytest
import sqlalchemy as sa

from credits_pipeline.source.demo import generate
from credits_pipeline.source.tables import TABLES

END = dt.date(2026, 6, 1)
SMALL = 80
WITH_ANOMALIES = 120

# The contract's catalog effects, by event name (section 1) — this file's own copy.
EFFECTS = {
    "subscription_amount_paid": "reset",
    "subscribe_to_trial": "reset",
    "prorated_credits": "reset",
    "monthly_credits_added": "add",
    "admin_credit_added": "add",
    "refunded_credits": "add",
    "custom_credit_purchased": "purchase",
    **{
        name: "spend"
        for name in (
            "faceless_video_generated",
            "faceless_video_exported",
            "image_animated",
            "bulk_ai_images_generated",
            "real_clone_generated",
            "real_clone_and_text_to_speech",
            "text_to_speech_generated",
            "audio_transcription",
            "video_generated",
            "ai_image_generated",
            "content_prompt_requested",
            "idea_discovered",
            "custom_character_purchased",
        )
    },
}
EXTRACTED = {
    "faceless": "facelesses",
    "real-clone": "real_clones",
    "video": "videos",
    "speech": "speeches",
}
UNEXTRACTED = {"keyword", "generator", "media", "character"}
ALL_RULES = {
    "chain_break",
    "balance_drift",
    "overdraft_writeoff",
    "event_type_mismatch",
    "pricing_mismatch",
    "excess_refund",
    "double_charge",
    "uncharged_content",
    "orphan_user",
    "orphan_event",
    "orphan_creditable",
    "duplicate_monthly_release",
    "timestamp_order",
}


def _ts(value) -> dt.datetime | None:
    """A stored timestamp (text on SQLite, datetime on servers) as a naive UTC datetime."""
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value)[:19])


def _fetch(url: str, sql: str) -> list[tuple]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name in ("mysql", "mariadb"):
                conn.execute(sa.text("SET time_zone = '+00:00'"))
            return [tuple(r) for r in conn.execute(sa.text(sql))]
    finally:
        engine.dispose()


def _valid_json(text) -> bool:
    if text is None:
        return True
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _price(ctype: str, etype: int, value: float, index: int, effect: str | None) -> int | None:
    if effect in ("reset", "purchase"):
        return index
    if ctype == "fixed":
        return int(value)
    if ctype == "calculative":
        if effect == "spend":
            return math.ceil(value * (index / 2.0))
        return math.ceil(value * index)
    return None


def check_ledger(url: str, cutoff: dt.datetime) -> tuple[list[tuple], dict[int, str]]:
    """Every section-3 violation in the database at `url`, and each user's reconciliation status.

    Violations are tuples (rule, user_id, credit_history_id, entity_type, entity_id).
    """
    events = {
        r[0]: r[1:]
        for r in _fetch(
            url, "SELECT id, name, type, calculation_type, value, min_amount FROM credit_events"
        )
    }
    users = {
        r[0]: (r[1] or 0, r[2])
        for r in _fetch(url, "SELECT id, remaining_credit_amount, extra_credits FROM users")
    }
    content = {
        alias: {r[0]: r[1:] for r in _fetch(url, f"SELECT id, user_id FROM {table}")}
        for alias, table in EXTRACTED.items()
    }
    rows = [
        r
        for r in _fetch(
            url,
            "SELECT id, user_id, credit_events_id, creditable_type, creditable_id, "
            "calculative_index, amount, previous_amount, event_type, meta, created_at, "
            "updated_at FROM credit_histories ORDER BY id",
        )
        if _valid_json(r[9])
    ]
    out: list[tuple] = []
    pools: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    breaks: dict[int, int] = defaultdict(int)
    last_created: dict[int, dt.datetime | None] = {}
    charged: dict[tuple, int] = defaultdict(int)
    refunded: dict[tuple, int] = defaultdict(int)
    spends: dict[tuple, list[tuple[int, dt.datetime]]] = defaultdict(list)
    refund_ids: dict[tuple, list[int]] = defaultdict(list)
    releases: dict[tuple, int] = defaultdict(int)
    charged_content: set[tuple] = set()
    for rid, uid, eid, ctype, cid, index, amount, prev, etype, _meta, created, updated in rows:
        found: set[str] = set()
        created, updated = _ts(created), _ts(updated)
        event = events.get(eid)
        name = event[0] if event else None
        effect = EFFECTS.get(name) if name in EFFECTS else {1: "add", 2: "spend"}.get(etype)
        pool = pools[uid]
        if effect == "purchase":
            if prev != pool[1] + amount:
                found.add("chain_break")
            pool[1] = prev
        elif effect is not None:
            if prev != pool[0]:
                found.add("chain_break")
            s, p = prev, pool[1]
            if effect == "reset":
                s = amount
            elif effect == "add":
                s += amount
            else:
                if amount > s + p:
                    found.add("overdraft_writeoff")
                if s >= amount:
                    s -= amount
                elif p >= amount:
                    p -= amount
                else:
                    s, p = 0, max(p - (amount - s), 0)
            pool[0], pool[1] = s, p
        if uid not in users:
            found.add("orphan_user")
        if event is None:
            found.add("orphan_event")
        else:
            if etype != event[1]:
                found.add("event_type_mismatch")
            if name != "refunded_credits":
                expected = _price(event[2], event[1], event[3], index, effect)
                if expected is not None and amount != expected:
                    found.add("pricing_mismatch")
                if effect == "spend" and event[4] is not None and amount < event[4]:
                    found.add("pricing_mismatch")
        key = (uid, ctype, cid)
        if name == "refunded_credits":
            if ctype is None or cid is None:
                found.add("excess_refund")
            else:
                refunded[key] += amount
                if refunded[key] > charged[key]:
                    found.add("excess_refund")
                refund_ids[key].append(rid)
        if effect == "spend" and ctype is not None and cid is not None:
            if created is not None:
                for earlier_id, earlier in spends[(eid, *key)]:
                    delta = (created - earlier).total_seconds()
                    between = any(earlier_id < r < rid for r in refund_ids[key])
                    if 0 <= delta < 60 and not between:
                        found.add("double_charge")
                spends[(eid, *key)].append((rid, created))
            charged[key] += amount
        if ctype is not None and ctype not in UNEXTRACTED:
            owner = content.get(ctype, {}).get(cid) if cid is not None else None
            if (
                ctype not in EXTRACTED
                or cid is None
                or owner is None
                or (owner[0] is not None and owner[0] != uid)
            ):
                found.add("orphan_creditable")
        if name == "monthly_credits_added" and created is not None:
            releases[(uid, created.year, created.month)] += 1
            if releases[(uid, created.year, created.month)] > 1:
                found.add("duplicate_monthly_release")
        previous = last_created.get(uid)
        if (
            created is None
            or (updated is not None and updated < created)
            or created > cutoff
            or (previous is not None and created < previous)
        ):
            found.add("timestamp_order")
        last_created[uid] = created
        if name is not None:
            charged_content.add((name, ctype, cid))
        breaks[uid] += "chain_break" in found
        out.extend((rule, uid, rid, "credit_history", rid) for rule in found)
    status: dict[int, str] = {}
    for uid, (remaining, extra) in users.items():
        s, p = pools.get(uid, [0, 0])
        drift = [x for x, y in ((s, remaining), (p, extra)) if x != y]
        out.extend(("balance_drift", uid, None, "user", uid) for _ in drift)
        status[uid] = "broken_chain" if breaks[uid] else ("drift" if drift else "ok")
    completed_videos = {r[0]: r[1] for r in _fetch(url, "SELECT id, status FROM videos")}
    checks = (
        (
            "faceless",
            "faceless_video_generated",
            "SELECT id, user_id, video_id FROM facelesses",
            lambda r: completed_videos.get(r[2]),
        ),
        (
            "real-clone",
            "real_clone_generated",
            "SELECT id, user_id, status FROM real_clones",
            lambda r: r[2],
        ),
        (
            "speech",
            "text_to_speech_generated",
            "SELECT id, user_id, status FROM speeches",
            lambda r: r[2],
        ),
        (
            "video",
            "video_generated",
            "SELECT id, user_id, status FROM videos WHERE type = 'custom'",
            lambda r: r[2],
        ),
    )
    for alias, event_name, sql, status_of in checks:
        for r in _fetch(url, sql):
            if status_of(r) == "completed" and (event_name, alias, r[0]) not in charged_content:
                out.append(("uncharged_content", r[1], None, alias, r[0]))
    return sorted(out, key=repr), status


def _manifest_rows(manifest: dict) -> list[tuple]:
    return sorted(
        (
            tuple(
                a[k] for k in ("rule", "user_id", "credit_history_id", "entity_type", "entity_id")
            )
            for a in manifest["anomalies"]
        ),
        key=repr,
    )


def _digest(url: str) -> str:
    h = hashlib.sha256()
    for table in TABLES:
        for row in _fetch(url, f"SELECT * FROM {table.name} ORDER BY id"):
            h.update(repr(row).encode())
    return h.hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _assert_clean(url: str, users: int) -> None:
    violations, status = check_ledger(url, _now())
    assert violations == []
    assert set(status.values()) == {"ok"}
    assert 0 < len(status) <= users


def test_the_same_arguments_give_the_same_database(tmp_path: Path) -> None:
    urls = [f"sqlite:///{tmp_path / f'{i}.sqlite'}" for i in range(3)]
    generate(urls[0], users=SMALL, seed=11, end=END)
    generate(urls[1], users=SMALL, seed=11, end=END)
    generate(urls[2], users=SMALL, seed=12, end=END)
    assert _digest(urls[0]) == _digest(urls[1])
    assert _digest(urls[0]) != _digest(urls[2])


def test_a_clean_sqlite_database_has_no_violation_and_every_user_reconciles(
    fresh_sqlite_url: str,
) -> None:
    summary = generate(fresh_sqlite_url, users=300, seed=3, end=END)
    assert summary.counts["credit_histories"] > 300 * 10
    assert summary.anomalies == [] and summary.manifest_path is None
    _assert_clean(fresh_sqlite_url, 300)


def test_no_row_is_written_at_or_after_the_end_nor_before_the_history(
    fresh_sqlite_url: str,
) -> None:
    generate(fresh_sqlite_url, users=SMALL, seed=5, end=END, months=6)
    lo, hi = _fetch(
        fresh_sqlite_url, "SELECT MIN(created_at), MAX(created_at) FROM credit_histories"
    )[0]
    assert _ts(hi) < dt.datetime(2026, 6, 1) and _ts(lo) >= dt.datetime(2025, 12, 1)


def test_ledger_ids_follow_time_and_every_catalog_spend_event_is_used(
    fresh_sqlite_url: str,
) -> None:
    generate(fresh_sqlite_url, users=300, seed=9, end=END)
    created = [
        _ts(r[0])
        for r in _fetch(fresh_sqlite_url, "SELECT created_at FROM credit_histories ORDER BY id")
    ]
    assert created == sorted(created)
    names = {
        r[0]
        for r in _fetch(
            fresh_sqlite_url,
            "SELECT DISTINCT e.name FROM credit_histories h "
            "JOIN credit_events e ON e.id = h.credit_events_id",
        )
    }
    assert names == set(EFFECTS)
    aliases = {
        r[0]
        for r in _fetch(fresh_sqlite_url, "SELECT DISTINCT creditable_type FROM credit_histories")
    }
    assert aliases == {None, *EXTRACTED, *UNEXTRACTED}


def test_plans_carry_their_credits_the_way_the_application_reads_them(
    fresh_sqlite_url: str,
) -> None:
    generate(fresh_sqlite_url, users=SMALL, seed=1, end=END)
    plans = _fetch(fresh_sqlite_url, "SELECT id, type, meta, name FROM plans")
    kinds = defaultdict(list)
    for _, kind, meta, name in plans:
        kinds[kind].append((json.loads(meta) if meta else None, name))
    assert {n for _, n in kinds["product"]} >= {"Basic", "Pro", "Enterprise"}
    priced = kinds["month"] + kinds["year"]
    assert all({"full_credits", "trial_credits"} <= set(m) for m, _ in priced)
    assert all(n == f"Extra Credits {m['credits']}" for m, n in kinds["one_time"])
    # A user's monthly credits are the price row's full_credits (a twelfth, truncated, yearly).
    by_id = {pid: (kind, json.loads(meta)) for pid, kind, meta, _ in plans if meta}
    for plan_id, monthly in _fetch(
        fresh_sqlite_url,
        "SELECT plan_id, monthly_credit_amount FROM users WHERE plan_id IS NOT NULL",
    ):
        kind, meta = by_id[plan_id]
        assert monthly == (meta["full_credits"] // 12 if kind == "year" else meta["full_credits"])


def test_the_anomalies_manifest_lists_exactly_what_the_rules_find(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'faulty.sqlite'}"
    summary = generate(url, users=WITH_ANOMALIES, seed=7, end=END, anomalies=True)
    assert summary.manifest_path == tmp_path / "faulty.sqlite.anomalies.json"
    manifest = json.loads(summary.manifest_path.read_text())
    found, _ = check_ledger(url, _now())
    assert found == _manifest_rows(manifest)
    assert {a["rule"] for a in manifest["anomalies"]} == ALL_RULES
    counts = defaultdict(int)
    for a in manifest["anomalies"]:
        counts[a["rule"]] += 1
    assert all(counts[r] >= 2 for r in ALL_RULES if r != "orphan_user")
    assert set(manifest["anomalies"][0]) == {
        "rule",
        "user_id",
        "credit_history_id",
        "entity_type",
        "entity_id",
    }
    quarantined = manifest["quarantined"]
    assert len(quarantined) == 2 and all(q["table"] == "credit_histories" for q in quarantined)
    meta = dict(
        _fetch(
            url,
            "SELECT id, meta FROM credit_histories WHERE id IN "
            f"({', '.join(str(q['id']) for q in quarantined)})",
        )
    )
    assert not any(_valid_json(meta[q["id"]]) for q in quarantined)


def test_anomalies_leave_all_other_users_reconciled(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'faulty.sqlite'}"
    manifest_path = tmp_path / "elsewhere" / "manifest.json"
    summary = generate(
        url, users=WITH_ANOMALIES, seed=21, end=END, anomalies=True, manifest_path=manifest_path
    )
    assert summary.manifest_path == manifest_path
    _, status = check_ledger(url, _now())
    faulty = {a["user_id"] for a in summary.anomalies}
    assert {uid for uid, s in status.items() if s != "ok"} <= faulty
    drift = {a["user_id"] for a in summary.anomalies if a["rule"] == "balance_drift"}
    assert {uid for uid, s in status.items() if s == "drift"} == drift


def test_personal_data_stays_in_columns_the_extraction_never_reads(fresh_sqlite_url: str) -> None:
    generate(fresh_sqlite_url, users=SMALL, seed=2, end=END)
    users = next(t for t in TABLES if t.name == "users")
    assert {c.name for c in users.columns if not c.extract} == {"name", "email"}
    emails = [r[0] for r in _fetch(fresh_sqlite_url, "SELECT email FROM users")]
    assert len(set(emails)) == len(emails) and all(e.endswith("@example.test") for e in emails)


@pytest.mark.mysql
def test_a_mariadb_database_gets_the_same_ledger_and_reconciles(
    fresh_mysql_url: str, tmp_path: Path
) -> None:
    lite = f"sqlite:///{tmp_path / 'twin.sqlite'}"
    generate(fresh_mysql_url, users=SMALL, seed=4, end=END)
    generate(lite, users=SMALL, seed=4, end=END)
    _assert_clean(fresh_mysql_url, SMALL)
    sql = (
        "SELECT id, user_id, amount, previous_amount, created_at FROM credit_histories ORDER BY id"
    )
    assert [(*r[:4], _ts(r[4])) for r in _fetch(fresh_mysql_url, sql)] == [
        (*r[:4], _ts(r[4])) for r in _fetch(lite, sql)
    ]


@pytest.mark.mysql
def test_mariadb_anomalies_match_the_manifest_without_json_quarantine(
    fresh_mysql_url: str, tmp_path: Path
) -> None:
    manifest_path = tmp_path / "m.json"
    summary = generate(
        fresh_mysql_url,
        users=WITH_ANOMALIES,
        seed=7,
        end=END,
        anomalies=True,
        manifest_path=manifest_path,
    )
    manifest = json.loads(manifest_path.read_text())
    assert manifest["quarantined"] == [] and summary.quarantined == []
    found, _ = check_ledger(fresh_mysql_url, _now())
    assert found == _manifest_rows(manifest)


@pytest.mark.postgres
def test_a_postgres_database_reconciles_and_its_manifest_matches(
    fresh_postgres_url: str, tmp_path: Path
) -> None:
    manifest_path = tmp_path / "m.json"
    generate(
        fresh_postgres_url,
        users=WITH_ANOMALIES,
        seed=8,
        end=END,
        anomalies=True,
        manifest_path=manifest_path,
    )
    manifest = json.loads(manifest_path.read_text())
    found, _ = check_ledger(fresh_postgres_url, _now())
    assert found == _manifest_rows(manifest)
    assert len(manifest["quarantined"]) == 2
    # Explicit ids must leave the sequences usable for the application's next insert.
    engine = sa.create_engine(fresh_postgres_url)
    with engine.begin() as conn:
        new_id = conn.execute(
            sa.text(
                "INSERT INTO credit_events (name, type, calculation_type, value) "
                "VALUES ('probe', 1, 'fixed', 1) RETURNING id"
            )
        ).scalar()
    engine.dispose()
    assert new_id == 21


def test_too_few_users_for_the_anomalies_is_refused(fresh_sqlite_url: str) -> None:
    with pytest.raises(ValueError):
        generate(fresh_sqlite_url, users=10, anomalies=True, end=END)
