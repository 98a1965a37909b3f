"""A realistic, deterministic `syllaby_v2` database for demos, tests and load checks.

The pipeline is only as trustworthy as the data it is exercised on, and production data is neither
shareable nor reproducible. `generate` writes the whole operational schema — credit catalog, Stripe
plans, users, Cashier subscriptions, purchases, content and millions of ledger rows — as the
Laravel application writes them, into SQLite, MariaDB/MySQL or PostgreSQL. The same arguments always
give the same content. A clean database reconciles perfectly; with `anomalies=True` it also carries
deliberate application faults, and a JSON manifest lists exactly the violations the contract's
rules must find. With `abuse=True` (by default with `anomalies`, given enough users) a handful
of users behave abusively, one kind of abuse each (`abuse.py`), and the manifest's `abusers` names
them for the usage-risk signals; subscribers who will cancel use the product less in the weeks
before. This package models the application independently of the pipeline's own catalog
and replay (it imports neither), so tests that compare the two can fail.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from credits_pipeline.source.demo import abuse as abusive
from credits_pipeline.source.demo import anomalies as faults
from credits_pipeline.source.demo import catalog as cat
from credits_pipeline.source.demo.simulation import (
    DEFAULT_BATCH_ROWS,
    MONTH,
    STRIPE_CURRENCY,
    YEAR,
    Simulation,
    Sink,
)
from credits_pipeline.source.demo.timeutil import DAY, TimestampFormatter, add_months, epoch
from credits_pipeline.source.demo.writer import (
    MYSQL,
    SQLITE,
    BulkWriter,
    contract_rows_present,
    make_engine,
)

__all__ = ["RULES", "GenerationSummary", "TargetNotEmpty", "default_manifest_path", "generate"]

RULES = faults.RULES
MANIFEST_SUFFIX = ".anomalies.json"
MANIFEST_ROW_KEYS = ("rule", "user_id", "credit_history_id", "entity_type", "entity_id")
CATALOG_SEEDED_DAYS_BEFORE = 30


class TargetNotEmpty(Exception):
    """The target database already holds contract rows and `replace` was not given.

    Generating drops and recreates the contract tables: on a real database that is data loss, so
    it happens only when the caller says so, and the caller can say what it drops (`counts`).
    """

    def __init__(self, url: str, counts: dict[str, int]) -> None:
        self.url = url
        self.counts = dict(counts)
        held = ", ".join(f"{table} {n:,} rows" for table, n in counts.items())
        super().__init__(f"{url} already holds contract tables with rows ({held})")


@dataclass
class GenerationSummary:
    """What `generate` wrote: rows per table, the manifest (if any) and where it went."""

    url: str
    counts: dict[str, int]
    seconds: float
    manifest_path: Path | None = None
    anomalies: list[dict] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)
    replaced: dict[str, int] = field(default_factory=dict)  # rows dropped per table (replace=True)
    abusers: list[dict] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        return sum(self.counts.values())


def default_manifest_path(url: str) -> Path | None:
    """`<file>.anomalies.json` next to a SQLite file; None for servers and in-memory SQLite."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != SQLITE or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database + MANIFEST_SUFFIX)


def _catalog_rows(rng: random.Random, ts: TimestampFormatter, seeded: int) -> tuple[list, dict]:
    """credit_events rows in a shuffled (seed-dependent) order: ids depend on seeding order."""
    events = list(cat.EVENTS)
    rng.shuffle(events)
    rows, ids = [], {}
    for i, e in enumerate(events, start=1):
        ids[e.name] = i
        rows.append(
            (
                i,
                e.name,
                e.type,
                e.calculation_type,
                float(e.value),
                None if e.min_amount is None else float(e.min_amount),
                ts(seeded),
                ts(seeded),
            )
        )
    return rows, ids


def _plan_rows(ts: TimestampFormatter, seeded: int) -> tuple[list, dict, dict]:
    """Stripe products with monthly/yearly price rows, and the extra-credit packs."""
    rows: list[tuple] = []
    prices: dict[tuple[str, str], tuple[int, str]] = {}
    packs: dict[int, tuple[int, str]] = {}
    when = ts(seeded)

    def add(parent, stripe_id, name, kind, price, slug, meta):
        pid = len(rows) + 1
        rows.append(
            (
                pid,
                parent,
                stripe_id,
                name,
                kind,
                float(price),
                None if kind == "product" else STRIPE_CURRENCY,
                slug,
                1,
                json.dumps(meta) if meta is not None else None,
                when,
                when,
            )
        )
        return pid

    for plan in cat.PLANS:
        product = add(None, f"prod_{plan.slug}", plan.name, "product", 0, plan.slug, None)
        for kind, price, full in (
            (MONTH, plan.month_price_cents, plan.monthly_credits),
            (YEAR, plan.year_price_cents, plan.yearly_full_credits),
        ):
            stripe_id = f"price_{plan.slug}_{kind}ly"
            pid = add(
                product,
                stripe_id,
                plan.name,
                kind,
                price,
                f"{plan.slug}-{kind}ly",
                {"full_credits": full, "trial_credits": plan.trial_credits},
            )
            prices[(plan.slug, kind)] = (pid, stripe_id)
    product = add(None, "prod_extra_credits", "Extra Credits", "product", 0, "extra-credits", None)
    for credits, price in cat.CREDIT_PACKS:
        stripe_id = f"price_extra_credits_{credits}"
        pid = add(
            product,
            stripe_id,
            f"Extra Credits {credits}",
            "one_time",
            price,
            f"extra-credits-{credits}",
            {"credits": credits},
        )
        packs[credits] = (pid, stripe_id)
    return rows, prices, packs


def _prepare_sqlite_file(url: str) -> None:
    """SQLite creates a missing file but not its directory (e.g. the default `data/`)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == SQLITE and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def _check_arguments(users: int, months: int, anomalies: bool, abuse: bool = False) -> None:
    if users < 1 or months < 1:
        raise ValueError("users and months must be at least 1")
    needed = (faults.INJECTION_COUNT if anomalies else 0) + abusive.ABUSER_COUNT + 10
    if abuse and users < needed:
        raise ValueError(
            f"abusive users need at least {needed} users "
            "(one distinct user per abuser and per injected fault)"
        )
    if anomalies and users < faults.MIN_USERS_WITH_ANOMALIES:
        raise ValueError(
            f"--anomalies needs at least {faults.MIN_USERS_WITH_ANOMALIES} users "
            "(one distinct user per injected fault)"
        )
    if anomalies and months < faults.MIN_MONTHS_WITH_ANOMALIES:
        raise ValueError(f"--anomalies needs at least {faults.MIN_MONTHS_WITH_ANOMALIES} months")


def generate(
    url: str,
    users: int = 200,
    seed: int = 7,
    end: dt.date | None = None,
    anomalies: bool = False,
    manifest_path: str | Path | None = None,
    months: int = 12,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    replace: bool = False,
    abuse: bool | None = None,
) -> GenerationSummary:
    """(Re)create the contract tables at `url` and fill them with `months` of history before `end`.

    `end` defaults to today's UTC date; no row is created at or after its midnight except the
    deliberately future-dated anomaly. The manifest is written when `anomalies` is set (to
    `manifest_path`, else next to a SQLite file) or whenever `manifest_path` is given.
    A database whose contract tables hold rows is left untouched (`TargetNotEmpty`) unless
    `replace` is set; the summary's `replaced` then lists the rows dropped per table. `abuse`
    adds the abusive users (default: with `anomalies`, when `users` leaves room for both);
    `abuse=False` gives a demo without any.
    """
    import time

    started = time.perf_counter()
    if abuse is None:  # with the faults, when there are users enough for both
        abuse = anomalies and users >= faults.INJECTION_COUNT + abusive.ABUSER_COUNT + 10
    _check_arguments(users, months, anomalies, abuse)
    _prepare_sqlite_file(url)
    if end is None:
        end = dt.datetime.now(dt.UTC).date()
    end_ts = epoch(end)
    start_ts = add_months(end_ts, -months)
    rng = random.Random(seed)

    engine = make_engine(url)
    try:
        held = contract_rows_present(engine)
        if held and not replace:
            raise TargetNotEmpty(engine.url.render_as_string(hide_password=True), held)
        writer = BulkWriter(engine)
        ts = TimestampFormatter(fractional=writer.family == SQLITE)
        seeded = start_ts - CATALOG_SEEDED_DAYS_BEFORE * DAY
        event_rows, event_ids = _catalog_rows(rng, ts, seeded)
        plan_rows, prices, packs = _plan_rows(ts, seeded)
        writer.write("credit_events", event_rows)
        writer.write("plans", plan_rows)
        injections = faults.assign(rng, users) if anomalies else {}
        abusers = abusive.assign(seed, users, set(injections)) if abuse else {}
        sink = Sink(writer.write, batch_rows)
        sim = Simulation(
            rng=rng,
            users=users,
            start_ts=start_ts,
            end_ts=end_ts,
            sink=sink,
            ts=ts,
            event_ids=event_ids,
            price_rows=prices,
            pack_rows=packs,
            injections=injections,
            malformed_json_allowed=writer.family != MYSQL,
            abusers=abusers,
        )
        sim.run()
        stuck = [u.uid for u in sim.users if u.pending_break]
        if stuck:
            raise RuntimeError(f"injected chain breaks never reached a later row: users {stuck}")
        for row in sim.user_rows():
            sink.add("users", row)
        for row in sim.subscription_rows():
            sink.add("subscriptions", row)
        sink.flush()
        writer.close()
        family = writer.family
        counts = dict(writer.counts)
    finally:
        engine.dispose()

    anomaly_rows = sorted(
        ({k: a[k] for k in MANIFEST_ROW_KEYS} for a in sim.anomalies),
        key=lambda a: (
            a["rule"],
            a["user_id"],
            a["credit_history_id"] or 0,
            a["entity_type"],
            a["entity_id"],
        ),
    )
    summary = GenerationSummary(
        url=engine.url.render_as_string(hide_password=True),
        counts=counts,
        seconds=0.0,
        anomalies=anomaly_rows,
        quarantined=list(sim.quarantined),
        replaced=held,
        abusers=abusive.manifest_rows(abusers),
    )
    target = (
        Path(manifest_path)
        if manifest_path is not None
        else (default_manifest_path(url) if anomalies or abuse else None)
    )
    if target is not None:
        manifest = {
            "generator": "credits_pipeline.source.demo",
            "seed": seed,
            "users": users,
            "months": months,
            "end": end.isoformat(),
            "dialect": family,
            "rules": list(RULES),
            "anomalies": anomaly_rows,
            "quarantined": sim.quarantined,
            "injections": [
                {"user_id": uid, "rule": inj.rule, "variant": inj.variant, "fault": inj.story}
                for uid, inj in sorted(injections.items())
            ],
            "details": sim.notes,
            "abuse": abuse,
            "abusers": summary.abusers,
        }
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(manifest, indent=2) + "\n")
        summary.manifest_path = target
    summary.seconds = time.perf_counter() - started
    return summary
