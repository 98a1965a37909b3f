"""Application faults the demo injects, each with exactly the ledger violations it causes.

`--anomalies` must leave violations of every rule of contract section 3, and a manifest that lists
precisely what the pipeline's rules will find: the reconciliation is tested against it by set
equality. Each fault is modelled as the application would really produce it (a pool edited by hand
in the admin panel, a retried webhook, a stale cached event type, a row written by a raw query...)
inside the simulation, so the stored pools follow from the application's own bookkeeping, and each
fault gets its own user so that consequences never overlap. Every class below documents the
cascade it causes (contract section 5) and records exactly those rows.
"""

from __future__ import annotations

import datetime as dt
import random

from credits_pipeline.source.demo import catalog as cat
from credits_pipeline.source.demo.simulation import (
    COMPLETED,
    FAILED,
    GENERATING,
    MONTHLY,
    TRIAL_CHURN,
    VIDEO_CUSTOM,
    YEARLY,
    Simulation,
    User,
)
from credits_pipeline.source.demo.timeutil import DAY, HOUR, epoch

CHAIN_BREAK = "chain_break"
BALANCE_DRIFT = "balance_drift"
OVERDRAFT_WRITEOFF = "overdraft_writeoff"
EVENT_TYPE_MISMATCH = "event_type_mismatch"
PRICING_MISMATCH = "pricing_mismatch"
EXCESS_REFUND = "excess_refund"
DOUBLE_CHARGE = "double_charge"
UNCHARGED_CONTENT = "uncharged_content"
ORPHAN_USER = "orphan_user"
ORPHAN_EVENT = "orphan_event"
ORPHAN_CREDITABLE = "orphan_creditable"
DUPLICATE_MONTHLY_RELEASE = "duplicate_monthly_release"
TIMESTAMP_ORDER = "timestamp_order"

RULES: tuple[str, ...] = (
    CHAIN_BREAK,
    BALANCE_DRIFT,
    OVERDRAFT_WRITEOFF,
    EVENT_TYPE_MISMATCH,
    PRICING_MISMATCH,
    EXCESS_REFUND,
    DOUBLE_CHARGE,
    UNCHARGED_CONTENT,
    ORPHAN_USER,
    ORPHAN_EVENT,
    ORPHAN_CREDITABLE,
    DUPLICATE_MONTHLY_RELEASE,
    TIMESTAMP_ORDER,
)

MALFORMED_META = '{"keyword": "faceless channel ideas", "source": '  # truncated by a serializer
MALFORMED_RENEWAL_META = '{"invoice": "in_1Q8'
MALFORMED_REASON = "malformed JSON"
FUTURE_TS = epoch(dt.date(2037, 1, 1))  # a server clock set decades ahead


class Injection:
    """A fault on one designated user. Subclasses override the hooks they need.

    `converted` fires when the user's trial converts (designated users are long-lived paying
    customers who never churn, so their history is rich); by default it schedules `fire` a month
    or two later.
    """

    rule = ""
    archetype = MONTHLY
    story = ""

    def __init__(self, variant: int) -> None:
        self.variant = variant

    def prepare(self, sim: Simulation, u: User) -> None:
        pass

    def converted(self, sim: Simulation, u: User, t: int) -> None:
        delay = sim.rng.randint(30 * DAY, 60 * DAY)
        sim.call_at(t + delay, u, lambda when: self.fire(sim, u, when))

    def fire(self, sim: Simulation, u: User, t: int) -> None:
        pass

    def renewal_meta(self, sim: Simulation, u: User, t: int) -> str | None:
        return None

    def renewed(self, sim: Simulation, u: User, t: int, rid: int) -> None:
        pass

    def released(self, sim: Simulation, u: User, t: int) -> None:
        pass

    def stored_pools(self, sim: Simulation, u: User, remaining, extra):
        return remaining, extra

    def note(self, sim: Simulation, u: User, **details) -> None:
        sim.notes.append({"rule": self.rule, "user_id": u.uid, "story": self.story, **details})


class PoolEditedByHand(Injection):
    """Support sets `users.remaining_credit_amount` in the admin panel without a ledger row.

    The application carries on from the edited pool, so the next row that records the
    subscription pool (any row but a purchase) is the one chain break; the replay continues from
    that row's snapshot, so nothing else follows and the final pools reconcile.
    """

    rule = CHAIN_BREAK
    story = "pool edited in the admin panel without a ledger row"

    def fire(self, sim, u, t):
        before = u.sub
        u.sub = (before // 100 + 2) * 100 if self.variant % 2 == 0 else (before // 2 or 100)
        u.pending_break = True
        self.note(sim, u, before=before, after=u.sub)


class LostUpdate(Injection):
    """The final stored pool differs from the ledger: one `balance_drift` for the pool.

    0: a retried Stripe webhook incremented `extra_credits` a second time without a ledger row;
    1: a profile save wrote back a stale `remaining_credit_amount`;
    2: a cancellation hook set `remaining_credit_amount` to NULL (= 0) while credits were left.
    """

    rule = BALANCE_DRIFT
    story = "lost update of a stored pool"

    def stored_pools(self, sim, u, remaining, extra):
        if self.variant == 0:
            extra += 500
        elif self.variant == 1:
            remaining = (remaining or 0) + 35
        else:
            remaining = None if (remaining or 0) > 0 else 120
        sim.anomalies.append(
            {
                "rule": BALANCE_DRIFT,
                "user_id": u.uid,
                "credit_history_id": None,
                "entity_type": "user",
                "entity_id": u.uid,
            }
        )
        self.note(sim, u, variant=self.variant)
        return remaining, extra


class ChargedWithoutRecheck(Injection):
    """A render job charges on completion without re-checking the balance: the real-clone charge
    exceeds both pools, which the application writes off (`overdraft_writeoff`, nothing else)."""

    rule = OVERDRAFT_WRITEOFF
    story = "charge written after the balance ran out"

    def fire(self, sim, u, t):
        index = max(50, u.sub + u.pur + sim.rng.randint(1, 40))
        cid = sim.new_clone(u, t, COMPLETED, t + 600)
        sim.charge(
            u, t, cat.REAL_CLONE_GENERATED, index, cat.ALIAS_REAL_CLONE, cid, tag=OVERDRAFT_WRITEOFF
        )


class StaleEventType(Injection):
    """A worker with a stale cached catalog writes the wrong `event_type`; the replay still goes by
    the catalog's effect, so only `event_type_mismatch` fires."""

    rule = EVENT_TYPE_MISMATCH
    story = "event_type copied from a stale cached catalog"

    def fire(self, sim, u, t):
        if self.variant == 2:
            sim.admin_bonus(u, t, 75, event_type=cat.SPEND, tag=EVENT_TYPE_MISMATCH)
            return
        sim.ensure_funds(u, t, 15)
        if self.variant == 0:
            sim.charge(
                u,
                t,
                cat.IDEA_DISCOVERED,
                1,
                cat.ALIAS_KEYWORD,
                sim.unextracted_id(cat.ALIAS_KEYWORD),
                event_type=cat.ADD,
                tag=EVENT_TYPE_MISMATCH,
            )
        else:
            sim.charge(
                u,
                t,
                cat.AI_IMAGE_GENERATED,
                1,
                cat.ALIAS_MEDIA,
                sim.unextracted_id(cat.ALIAS_MEDIA),
                event_type=cat.ADD,
                tag=EVENT_TYPE_MISMATCH,
            )


class WrongPrice(Injection):
    """A charge priced by an outdated or buggy rule; the app's pools follow the wrong amount, so
    only `pricing_mismatch` fires (one anomaly even when it is also below `min_amount`).

    0: idea discovery at a stale price of 12 (value 15, min 15);
    1: a render priced with integer division (`2 * intdiv(index, 2)`) for an odd index;
    2: an AI-writer prompt rounded down instead of up.
    """

    rule = PRICING_MISMATCH
    story = "charge priced by a stale or buggy rule"

    def fire(self, sim, u, t):
        if self.variant == 0:
            name, index, amount = cat.IDEA_DISCOVERED, 1, 12
            ctype, cid = cat.ALIAS_KEYWORD, sim.unextracted_id(cat.ALIAS_KEYWORD)
        elif self.variant == 1:
            index = 2 * sim.rng.randint(4, 29) + 1
            name, amount = cat.VIDEO_GENERATED, 2 * (index // 2)
            ctype, cid = cat.ALIAS_VIDEO, sim.new_video(u, t, VIDEO_CUSTOM, COMPLETED, t + 900)
        else:
            name, index = cat.CONTENT_PROMPT_REQUESTED, 250  # 0.01 * 125.0 = 1.25 -> 2, not 1
            amount = 1
            ctype, cid = cat.ALIAS_GENERATOR, sim.unextracted_id(cat.ALIAS_GENERATOR)
        sim.ensure_funds(u, t, amount)
        sim.row(u, t, name, amount, index, ctype, cid, tag=PRICING_MISMATCH)


class RefundReplayed(Injection):
    """Refunds beyond the charge: 0-1, the failure webhook of a failed render is delivered twice
    (the second refund is the `excess_refund`); 2, support refunds credits through the refund
    endpoint with no creditable."""

    rule = EXCESS_REFUND
    story = "refund webhook replayed / refund without a creditable"

    def fire(self, sim, u, t):
        if self.variant == 2:
            sim.refund(u, t, 25, None, None, tag=EXCESS_REFUND)
            return
        index = sim.rng.randint(10, 40)
        sim.ensure_funds(u, t, index)
        vid = sim.new_video(u, t, VIDEO_CUSTOM, FAILED, t + 600)
        amount = sim.charge(u, t, cat.VIDEO_GENERATED, index, cat.ALIAS_VIDEO, vid)
        sim.call_at(t + 600, u, lambda when: sim.refund(u, when, amount, cat.ALIAS_VIDEO, vid))
        sim.call_at(
            t + 630,
            u,
            lambda when: sim.refund(u, when, amount, cat.ALIAS_VIDEO, vid, tag=EXCESS_REFUND),
        )


class RaceChargedTwice(Injection):
    """Two workers pick up the same job and both charge within 60 s (no refund between).

    0: a render charged twice in the same second; 1: an export charged twice 12 s apart;
    2: a speech charged three times (two anomalies: the second and the third row).
    """

    rule = DOUBLE_CHARGE
    story = "the same charge written by racing workers"

    def fire(self, sim, u, t):
        if self.variant == 0:
            index = sim.rng.randint(6, 30)
            sim.ensure_funds(u, t, 2 * index)
            vid = sim.new_video(u, t, VIDEO_CUSTOM, COMPLETED, t + 900)
            sim.charge(u, t, cat.VIDEO_GENERATED, index, cat.ALIAS_VIDEO, vid)
            sim.charge(u, t, cat.VIDEO_GENERATED, index, cat.ALIAS_VIDEO, vid, tag=DOUBLE_CHARGE)
            return
        times: tuple[int, ...]
        tags: tuple[str | None, ...]
        if self.variant == 1:
            duration = sim.rng.randint(15, 40)
            sim.ensure_funds(u, t, duration)
            fid, vid, _ = sim.new_faceless(u, t, COMPLETED, t + 600, exports=2)
            sim.charge(u, t, cat.FACELESS_VIDEO_GENERATED, duration, cat.ALIAS_FACELESS, fid)
            times, tags = (t + 3600, t + 3612), (None, DOUBLE_CHARGE)
            name, ctype, cid, index = cat.FACELESS_VIDEO_EXPORTED, cat.ALIAS_VIDEO, vid, 5
        else:
            sid = sim.new_speech(u, t, COMPLETED, t + 300)
            times, tags = (t, t + 20, t + 45), (None, DOUBLE_CHARGE, DOUBLE_CHARGE)
            name, ctype, cid, index = cat.TEXT_TO_SPEECH_GENERATED, cat.ALIAS_SPEECH, sid, 20
        for when, tag in zip(times, tags, strict=False):

            def charge(at, tag=tag):
                sim.ensure_funds(u, at, index)
                sim.charge(u, at, name, index, ctype, cid, tag=tag)

            sim.call_at(when, u, charge)


class CompletedWithoutCharge(Injection):
    """The render webhook marks content completed but the charge job died: `uncharged_content`
    for the content row (no ledger row involved). Variant = which content table."""

    rule = UNCHARGED_CONTENT
    story = "content completed but never charged"

    def fire(self, sim, u, t):
        done = t + 900
        if self.variant == 0:
            cid, _, _ = sim.new_faceless(u, t, COMPLETED, done)
            alias = cat.ALIAS_FACELESS
        elif self.variant == 1:
            cid, alias = sim.new_clone(u, t, COMPLETED, done), cat.ALIAS_REAL_CLONE
        elif self.variant == 2:
            cid, alias = sim.new_speech(u, t, COMPLETED, done), cat.ALIAS_SPEECH
        else:
            cid, alias = sim.new_video(u, t, VIDEO_CUSTOM, COMPLETED, done), cat.ALIAS_VIDEO
        sim.anomalies.append(
            {
                "rule": UNCHARGED_CONTENT,
                "user_id": u.uid,
                "credit_history_id": None,
                "entity_type": alias,
                "entity_id": cid,
            }
        )


class DeletedUser(Injection):
    """A user hard-deleted by a GDPR script that skipped the ledger (no FK in that environment):
    every one of the user's rows is an `orphan_user`; the user has no balance_drift. The trial
    user only used features whose content tables are not extracted, so no other rule sees it."""

    rule = ORPHAN_USER
    archetype = TRIAL_CHURN
    story = "user deleted, ledger rows kept"

    def prepare(self, sim, u):
        u.deleted = True
        u.restricted = True
        u.rate = 0.6


class LegacyEvent(Injection):
    """Rows of events deleted from the catalog (seeded in an older release): `orphan_event` only;
    the replay applies them by `event_type`, as the application did."""

    rule = ORPHAN_EVENT
    story = "event removed from the catalog, rows kept"

    def fire(self, sim, u, t):
        event_id, name, event_type = cat.LEGACY_EVENTS[self.variant % len(cat.LEGACY_EVENTS)]
        amount = 100 if event_type == cat.ADD else 30
        effect = cat.EFFECT_ADD if event_type == cat.ADD else cat.EFFECT_SPEND
        if event_type == cat.SPEND:
            sim.ensure_funds(u, t, amount)
        sim.row(
            u,
            t,
            name,
            amount,
            amount,
            event_type=event_type,
            event_id=event_id,
            effect=effect,
            tag=ORPHAN_EVENT,
        )


class BadCreditable(Injection):
    """A charge pointing at content it cannot point at: 0, an old code path writing the alias
    `real_clone` (the clone stays `generating`, so it is not uncharged content); 1, a faceless the
    user deleted (its rows are gone); 2, a teammate's video (or, before any exists, alias '')."""

    rule = ORPHAN_CREDITABLE
    story = "creditable with a wrong alias, a deleted row or another owner"

    def fire(self, sim, u, t):
        if self.variant == 0:
            index = 60
            sim.ensure_funds(u, t, index)
            cid = sim.new_clone(u, t, GENERATING, t)
            sim.charge(
                u, t, cat.REAL_CLONE_GENERATED, index, "real_clone", cid, tag=ORPHAN_CREDITABLE
            )
        elif self.variant == 1:
            fid, _, duration = sim.new_faceless(u, t, COMPLETED, t, write=False)
            sim.ensure_funds(u, t, duration)
            sim.charge(
                u,
                t,
                cat.FACELESS_VIDEO_GENERATED,
                duration,
                cat.ALIAS_FACELESS,
                fid,
                tag=ORPHAN_CREDITABLE,
            )
        else:
            sim.ensure_funds(u, t, 2)
            if sim.last_clean_video is not None:
                ctype, cid = cat.ALIAS_VIDEO, sim.last_clean_video[0]
            else:
                ctype, cid = "", 1
            sim.charge(u, t, cat.AUDIO_TRANSCRIPTION, 2, ctype, cid, tag=ORPHAN_CREDITABLE)


class ReleaseRanTwice(Injection):
    """The yearly release cron overlaps itself: extra `monthly_credits_added` rows in one calendar
    month, one `duplicate_monthly_release` per extra row. 0: a second worker in the same second;
    1: a retry the next day; 2: three rows (two anomalies)."""

    rule = DUPLICATE_MONTHLY_RELEASE
    archetype = YEARLY
    story = "monthly release job ran more than once"

    def converted(self, sim, u, t):
        pass

    def released(self, sim, u, t):
        if u.releases != 2:
            return
        if self.variant == 0:
            sim.release(u, t, tag=DUPLICATE_MONTHLY_RELEASE)
        elif self.variant == 1:
            sim.call_at(
                t + DAY, u, lambda when: sim.release(u, when, tag=DUPLICATE_MONTHLY_RELEASE)
            )
        else:
            sim.release(u, t, tag=DUPLICATE_MONTHLY_RELEASE)
            sim.call_at(
                t + HOUR, u, lambda when: sim.release(u, when, tag=DUPLICATE_MONTHLY_RELEASE)
            )


class BadTimestamp(Injection):
    """Timestamps a row should not have: 0, NULL `created_at`/`updated_at` (a raw query-builder
    insert by an admin script); 1, `updated_at` an hour before `created_at`; 2, a queued job
    stamping its row with its dispatch time, 90 s before the user's previous row; 3, a server
    clock in 2037 on the user's last row (after the extraction cut-off). Each is one
    `timestamp_order`; the neighbours' comparisons are unaffected (skipped around NULL, and the
    others keep order)."""

    rule = TIMESTAMP_ORDER
    story = "row with a NULL, inverted, out-of-order or future timestamp"

    def converted(self, sim, u, t):
        if self.variant == 3:
            sim.call_at(max(sim.end_ts - 2 * DAY, t + DAY), u, lambda when: self.fire(sim, u, when))
        else:
            super().converted(sim, u, t)

    def fire(self, sim, u, t):
        if self.variant == 0:
            sim.admin_bonus(u, t, 100, created=None, updated=None, tag=TIMESTAMP_ORDER)
        elif self.variant == 1:
            sim.ensure_funds(u, t, 15)
            sim.charge(
                u,
                t,
                cat.IDEA_DISCOVERED,
                1,
                cat.ALIAS_KEYWORD,
                sim.unextracted_id(cat.ALIAS_KEYWORD),
                updated=t - HOUR,
                tag=TIMESTAMP_ORDER,
            )
        elif self.variant == 2:
            sim.ensure_funds(u, t, 2)
            sim.charge(
                u,
                t,
                cat.AI_IMAGE_GENERATED,
                1,
                cat.ALIAS_MEDIA,
                sim.unextracted_id(cat.ALIAS_MEDIA),
            )
            sim.charge(
                u,
                t,
                cat.AI_IMAGE_GENERATED,
                1,
                cat.ALIAS_MEDIA,
                sim.unextracted_id(cat.ALIAS_MEDIA),
                created=t - 90,
                updated=t - 90,
                tag=TIMESTAMP_ORDER,
            )
        else:
            sim.ensure_funds(u, t, 1)
            future = FUTURE_TS + t % DAY
            sim.charge(
                u,
                t,
                cat.AI_IMAGE_GENERATED,
                1,
                None,
                None,
                created=future,
                updated=future,
                tag=TIMESTAMP_ORDER,
            )
            u.frozen = True  # the user's last row: nothing later compares with it


class QuarantinedRenewal(Injection):
    """Malformed JSON in the `meta` of a renewal of a user who spent nothing that month: the
    renewal's previous_amount equals its amount, so dropping the quarantined row changes nothing
    in the replay — quarantine only, no ledger anomaly. (MariaDB's JSON column rejects the text:
    valid JSON is written there and nothing is quarantined.)"""

    rule = "quarantine"
    story = "renewal meta truncated; quarantine with no ledger consequence"

    def prepare(self, sim, u):
        u.rate = 0.0

    def converted(self, sim, u, t):
        pass

    def renewal_meta(self, sim, u, t):
        if u.renewals == 2 and sim.malformed_json_allowed:
            if u.sub != sim.monthly_credits(u):
                raise RuntimeError("quarantined renewal would not be neutral")
            return MALFORMED_RENEWAL_META
        return None

    def renewed(self, sim, u, t, rid):
        if u.renewals == 2 and sim.malformed_json_allowed:
            sim.quarantined.append(
                {
                    "table": "credit_histories",
                    "id": rid,
                    "column": "meta",
                    "reason": MALFORMED_REASON,
                }
            )
            self.note(sim, u, credit_history_id=rid, consequence="none")


class QuarantinedSpend(Injection):
    """Malformed JSON in the `meta` of a subscription-pool spend, followed at once by another
    spend: with the quarantined row missing from the replay, the following row is a chain break
    (recorded in the anomalies). On MariaDB nothing is quarantined and nothing breaks."""

    rule = "quarantine"
    story = "spend meta truncated; the next row becomes a chain break"

    def fire(self, sim, u, t):
        sim.ensure_subscription_pool(u, t, 30)
        bad = sim.malformed_json_allowed
        amount = cat.price(cat.EVENTS_BY_NAME[cat.IDEA_DISCOVERED], 1)
        rid = sim.row(
            u,
            t,
            cat.IDEA_DISCOVERED,
            amount,
            1,
            cat.ALIAS_KEYWORD,
            sim.unextracted_id(cat.ALIAS_KEYWORD),
            meta=MALFORMED_META if bad else '{"keyword": "faceless channel ideas"}',
        )
        if bad:
            sim.quarantined.append(
                {
                    "table": "credit_histories",
                    "id": rid,
                    "column": "meta",
                    "reason": MALFORMED_REASON,
                }
            )
            u.pending_break = True
            self.note(sim, u, credit_history_id=rid, consequence="chain_break at the next row")
        sim.charge(
            u, t, cat.IDEA_DISCOVERED, 1, cat.ALIAS_KEYWORD, sim.unextracted_id(cat.ALIAS_KEYWORD)
        )


# (class, variants): one designated user per variant.
PLAN: tuple[tuple[type[Injection], int], ...] = (
    (PoolEditedByHand, 3),
    (LostUpdate, 3),
    (ChargedWithoutRecheck, 3),
    (StaleEventType, 3),
    (WrongPrice, 3),
    (RefundReplayed, 3),
    (RaceChargedTwice, 3),
    (CompletedWithoutCharge, 4),
    (DeletedUser, 2),
    (LegacyEvent, 3),
    (BadCreditable, 3),
    (ReleaseRanTwice, 3),
    (BadTimestamp, 4),
    (QuarantinedRenewal, 1),
    (QuarantinedSpend, 1),
)
INJECTION_COUNT = sum(n for _, n in PLAN)
MIN_USERS_WITH_ANOMALIES = INJECTION_COUNT + 10
MIN_MONTHS_WITH_ANOMALIES = 6


def assign(rng: random.Random, users: int) -> dict[int, Injection]:
    """Pick one distinct user per injection, deterministically."""
    uids = rng.sample(range(1, users + 1), INJECTION_COUNT)
    out: dict[int, Injection] = {}
    i = 0
    for cls, variants in PLAN:
        for v in range(variants):
            out[uids[i]] = cls(v)
            i += 1
    return out
