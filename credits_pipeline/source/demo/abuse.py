"""Abusive users the demo simulates, one behaviour each, for the usage-risk signals to find.

The fraud and usage-pattern signals (`marts.usage_risk_signals`) are only credible if the demo
holds behaviour they are meant to catch, and a manifest saying who it is. Each class below plays
one kind of abuse as the application would record it — a spending burst far above the user's own
habit, generations reported failed to get refunds, credit packs bought and drained within minutes,
outsized or repeated admin grants, concurrent spends racing past an empty pool, a ring of accounts
posting the same content. Abusers are designated long-lived monthly subscribers (they never churn
or upgrade), distinct from the users carrying application faults (`anomalies.py`).

Like the rest of the generator, this module knows nothing of the pipeline's detection code: the
signal names below are the manifest's vocabulary, written once here; the detection spells its own.
Every amount is priced by the application's rules, so the only ledger-rule violations abusers
cause are the overdraft write-offs of the racing spends, which are recorded in the anomalies like
any fault's.
"""

from __future__ import annotations

import random

from credits_pipeline.source.demo import catalog as cat
from credits_pipeline.source.demo.simulation import (
    COMPLETED,
    MONTHLY,
    VIDEO_CUSTOM,
    Simulation,
    User,
)
from credits_pipeline.source.demo.timeutil import DAY, MINUTE

SPEND_VELOCITY_SPIKE = "spend_velocity_spike"
REFUND_RATIO = "refund_ratio"
PURCHASE_THEN_DRAIN = "purchase_then_drain"
ADMIN_GRANT_OUT_OF_PATTERN = "admin_grant_out_of_pattern"
REPEATED_OVERDRAFT_WRITEOFFS = "repeated_overdraft_writeoffs"
SHARED_CONTENT_PATTERN = "shared_content_pattern"
OVERDRAFT_WRITEOFF_RULE = "overdraft_writeoff"  # the ledger rule the racing spends violate

SIGNALS: tuple[str, ...] = (
    SPEND_VELOCITY_SPIKE,
    REFUND_RATIO,
    PURCHASE_THEN_DRAIN,
    ADMIN_GRANT_OUT_OF_PATTERN,
    REPEATED_OVERDRAFT_WRITEOFFS,
    SHARED_CONTENT_PATTERN,
)

SHARED_TITLE = "Make $500 a day with AI - copy this faceless channel"


class Abuse:
    """One abusive behaviour on one designated user; subclasses override the hooks they need.

    Everything happens within the last weeks before the end of the history, so that windows
    anchored at the extraction cut-off see it.
    """

    signal = ""
    story = ""
    archetype = MONTHLY

    def __init__(self, variant: int) -> None:
        self.variant = variant

    def prepare(self, sim: Simulation, u: User) -> None:
        pass

    def converted(self, sim: Simulation, u: User, t: int) -> None:
        pass

    def at_days_before_end(self, sim: Simulation, u: User, now: int, days: float, fn) -> None:
        """Schedule `fn(when)` `days` before the end of the history (offset by the user's id, so
        abusers of one kind do not act in the same second); a moment already past is skipped (a
        short history), as the event heap must only move forward."""
        when = int(sim.end_ts - days * DAY) + (u.uid % 97) * MINUTE
        if when > now:
            sim.call_at(when, u, fn)


class SpendBurst(Abuse):
    """A quiet Enterprise subscriber whose account suddenly renders real clones around the clock
    for three days just before the cut-off (a shared or stolen login): ten times their weekly
    habit."""

    signal = SPEND_VELOCITY_SPIKE
    story = "spending burst far above the user's own baseline"

    def prepare(self, sim, u):
        u.plan = cat.PLANS[2]
        u.rate = 0.5

    def converted(self, sim, u, t):
        for day in range(3):
            for k in range(12):
                days = 5.5 - day - k / 12
                self.at_days_before_end(sim, u, t, days, lambda when: self.burst(sim, u, when))

    def burst(self, sim, u, t):
        index = sim.rng.randint(80, 160)
        sim.ensure_funds(u, t, index)
        cid = sim.new_clone(u, t, COMPLETED, t + 10 * MINUTE)
        sim.charge(u, t, cat.REAL_CLONE_GENERATED, index, cat.ALIAS_REAL_CLONE, cid)


class RefundFarmer(Abuse):
    """Reports most of their generations as failed and gets them refunded: the failure webhook
    refunds each one, so the ledger is exact, but the refunds are half of what they are charged."""

    signal = REFUND_RATIO
    story = "most generations reported failed and refunded"

    def prepare(self, sim, u):
        u.failure_rate = 0.75
        u.rate = 2.5


class PackDrainer(Abuse):
    """Buys large credit packs (a card that will be disputed) and spends each one within minutes
    on real clones, three times in two months."""

    signal = PURCHASE_THEN_DRAIN
    story = "credit packs bought and drained within minutes"

    def converted(self, sim, u, t):
        for days in (70, 45, 20):
            self.at_days_before_end(sim, u, t, days, lambda when: self.drain(sim, u, when))

    def drain(self, sim, u, t):
        pack = 1000 if self.variant == 0 else 2500
        sim.buy_pack(u, t, pack, may_fail=False)
        spent, at = 0, t
        while spent < pack and u.sub + u.pur >= 50:
            at += sim.rng.randint(40, 90)
            index = min(sim.rng.randint(120, 180), u.sub + u.pur)
            cid = sim.new_clone(u, at, COMPLETED, at + 5 * MINUTE)
            spent += sim.charge(u, at, cat.REAL_CLONE_GENERATED, index, cat.ALIAS_REAL_CLONE, cid)


class GrantedByAdmin(Abuse):
    """Credits granted in the admin panel out of any pattern: 0, one outsized grant (a compromised
    admin account); 1, a grant every other week (a friend in support)."""

    signal = ADMIN_GRANT_OUT_OF_PATTERN
    story = "outsized or repeated admin grants"

    def converted(self, sim, u, t):
        if self.variant == 0:
            self.at_days_before_end(sim, u, t, 25, lambda when: sim.admin_bonus(u, when, 6000))
        else:
            for days in (75, 60, 45, 30, 15):
                self.at_days_before_end(sim, u, t, days, lambda when: sim.admin_bonus(u, when, 400))


class RacingSpends(Abuse):
    """Fires renders from several tabs at once when the pool is nearly empty: the first drains the
    pools and the second, written in the same second, is an overdraft the application writes off
    (the ledger rule `overdraft_writeoff` finds each one). Three times in ten weeks."""

    signal = REPEATED_OVERDRAFT_WRITEOFFS
    story = "concurrent spends racing past an empty pool"

    def converted(self, sim, u, t):
        for days in (70, 40, 15):
            self.at_days_before_end(sim, u, t, days, lambda when: self.race(sim, u, when))

    def race(self, sim, u, t):
        sim.ensure_funds(u, t, 20)
        first = u.sub + u.pur - 3
        vid = sim.new_video(u, t, VIDEO_CUSTOM, COMPLETED, t + 10 * MINUTE)
        sim.charge(u, t, cat.VIDEO_GENERATED, first, cat.ALIAS_VIDEO, vid)
        second = sim.new_video(u, t, VIDEO_CUSTOM, COMPLETED, t + 10 * MINUTE)
        sim.charge(
            u,
            t,
            cat.VIDEO_GENERATED,
            sim.rng.randint(20, 40),
            cat.ALIAS_VIDEO,
            second,
            tag=OVERDRAFT_WRITEOFF_RULE,
        )


class ContentRing(Abuse):
    """One of a ring of accounts run by one operator, all rendering the same video (same title)
    within a few weeks — multi-accounting to farm trial and plan credits."""

    signal = SHARED_CONTENT_PATTERN
    story = "one of several accounts posting the same content"

    def converted(self, sim, u, t):
        for days in (40 - 3 * self.variant, 20 - 2 * self.variant):
            self.at_days_before_end(sim, u, t, days, lambda when: self.post(sim, u, when))

    def post(self, sim, u, t):
        index = 24
        sim.ensure_funds(u, t, index)
        vid = sim.new_video(u, t, VIDEO_CUSTOM, COMPLETED, t + 15 * MINUTE, title=SHARED_TITLE)
        sim.charge(u, t, cat.VIDEO_GENERATED, index, cat.ALIAS_VIDEO, vid)


# (class, variants): one designated user per variant.
PLAN: tuple[tuple[type[Abuse], int], ...] = (
    (SpendBurst, 2),
    (RefundFarmer, 2),
    (PackDrainer, 2),
    (GrantedByAdmin, 2),
    (RacingSpends, 2),
    (ContentRing, 5),
)
ABUSER_COUNT = sum(n for _, n in PLAN)
ASSIGNMENT_SALT = 7919  # abusers are drawn from their own stream, so faults keep their users


def assign(seed: int, users: int, taken: set[int]) -> dict[int, Abuse]:
    """Pick one distinct user per abusive behaviour, deterministically from the seed, among the
    users no fault was injected into."""
    rng = random.Random(seed * ASSIGNMENT_SALT + 1)
    free = [uid for uid in range(1, users + 1) if uid not in taken]
    uids = rng.sample(free, ABUSER_COUNT)
    out: dict[int, Abuse] = {}
    i = 0
    for cls, variants in PLAN:
        for v in range(variants):
            out[uids[i]] = cls(v)
            i += 1
    return out


def manifest_rows(abusers: dict[int, Abuse]) -> list[dict]:
    """The manifest's `abusers`: who, which signal should find them, and the story."""
    return [
        {"user_id": uid, "signal": a.signal, "variant": a.variant, "behaviour": a.story}
        for uid, a in sorted(abusers.items())
    ]


__all__ = ["ABUSER_COUNT", "SIGNALS", "assign", "manifest_rows"]
