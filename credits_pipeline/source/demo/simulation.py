"""A discrete-event simulation of the application writing its credit ledger.

The demo database must look like the one the Laravel application writes: users sign up, start a
trial, convert to monthly or yearly plans, renew, upgrade, churn, buy extra credits, generate
content that is charged (and refunded when it fails), and the ledger records every move with the
balance snapshot the application's bookkeeping gives. Simulating all users on one global event heap
writes ledger rows in true global time order, so ids follow time as in production, while memory
stays bounded by the number of users (a few pending events each), not by the number of rows.
Rows are handed to a sink that batches them into the database; faults (`anomalies.py`) hook into
the same simulation so that their consequences follow from the application's own bookkeeping.
"""

from __future__ import annotations

import bisect
import heapq
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from credits_pipeline.source.demo import catalog as cat
from credits_pipeline.source.demo.timeutil import (
    DAY,
    HOUR,
    MINUTE,
    TimestampFormatter,
    add_months,
    first_of_next_month,
    month_key,
)

if TYPE_CHECKING:  # the fault and abuse modules import this one
    from credits_pipeline.source.demo.abuse import Abuse
    from credits_pipeline.source.demo.anomalies import Injection

EMPTY_META = "[]"
TRIAL_SECONDS = 7 * DAY
YEARLY_RELEASE_OFFSET = 2 * HOUR + 15 * MINUTE  # the release cron runs at 02:15 UTC
STRIPE_CURRENCY = "usd"
DEFAULT_BATCH_ROWS = 20_000

# Cashier statuses.
TRIALING, ACTIVE, CANCELED, PAST_DUE = "trialing", "active", "canceled", "past_due"

# Archetypes: how a user's subscription life goes.
NEVER, TRIAL_CHURN, MONTHLY, YEARLY = "never", "trial_churn", "monthly", "yearly"
ARCHETYPE_WEIGHTS = ((NEVER, 0.08), (TRIAL_CHURN, 0.22), (MONTHLY, 0.50), (YEARLY, 0.20))

MONTHLY_CHURN = 0.05
MONTHLY_PAST_DUE = 0.02
UPGRADE_SHARE = 0.10
ADMIN_BONUS_SHARE = 0.04
BUY_WHEN_SHORT = 0.35
PURCHASE_FAILURE = 0.08
GENERATION_FAILURE = 0.07
# Engagement fades before a cancellation: most monthly subscribers who will not renew use the
# product less in the weeks before (the pattern churn models learn from).
FADE_SHARE = 0.75
FADE_SECONDS = 21 * 86_400
FADE_FACTOR = 0.15

# Content statuses as the application writes them.
COMPLETED, FAILED, DRAFT = "completed", "failed", "draft"
RENDERING, GENERATING, PROCESSING = "rendering", "generating", "processing"
# videos.type
VIDEO_FACELESS, VIDEO_CUSTOM = "faceless", "custom"
# Billing intervals: the `type` of a plan's price rows.
MONTH, YEAR = "month", "year"
# purchases.status
SUCCEEDED = "succeeded"

# Heap entry kinds.
K_SIGNUP, K_TRIAL_END, K_RENEW, K_RELEASE, K_ACTION, K_CALL = range(6)

PROVIDERS = ((1, 0.86), (2, 0.06), (3, 0.06), (4, 0.02))  # stripe, google_play, apple, jvzoo
FIRST_NAMES = (
    "Avery",
    "Jordan",
    "Riley",
    "Casey",
    "Morgan",
    "Quinn",
    "Harper",
    "Rowan",
    "Emery",
    "Sage",
    "Noa",
    "Kai",
    "Mika",
    "Luca",
    "Ines",
    "Omar",
    "Yuki",
    "Lena",
    "Tariq",
    "Zoe",
)
LAST_NAMES = (
    "Fischer",
    "Okafor",
    "Silva",
    "Nguyen",
    "Kowalski",
    "Haddad",
    "Moreau",
    "Tanaka",
    "Novak",
    "Reyes",
    "Lindqvist",
    "Mensah",
    "Costa",
    "Ivanova",
    "Byrne",
    "Sato",
)
GENRES = ("motivation", "history", "true crime", "finance", "travel", "science", "horror", "tech")
VIDEO_PROVIDERS = ("creatomate", "remotion")
CLONE_PROVIDERS = ("heygen", "d-id")
SPEECH_PROVIDERS = ("elevenlabs", "openai")
CAPTION_PROVIDERS = ("whisper", "assemblyai")


@dataclass
class User:
    """The application's view of one user while the simulation runs."""

    uid: int
    signup: int
    archetype: str
    interval: str  # MONTH | YEAR chosen at checkout
    plan: cat.Plan
    provider: int
    rate: float  # actions per day
    sub: int = 0
    pur: int = 0
    has_rows: bool = False
    last_ts: int = 0
    status: str | None = None
    trial_end: int | None = None
    anchor: int | None = None
    ends_at: int | None = None
    active_until: float = float("inf")
    renewals: int = 0
    releases: int = 0
    last_clone: int | None = None
    injection: Injection | None = None
    pending_break: bool = False
    frozen: bool = False
    deleted: bool = False
    restricted: bool = False  # only actions on aliases whose tables are not extracted
    stored_remaining: object = None  # override of the final stored pools (drift faults)
    stored_extra: object = None
    drift_override: bool = False
    abuse: Abuse | None = None  # an abusive behaviour (`abuse.py`), orthogonal to faults
    cancel_next: bool = False  # decided at the previous renewal: the next one is a cancellation
    fades: bool = False  # ...and the user's engagement fades in the weeks before it
    next_renew_at: int | None = None
    plan_history: list = field(default_factory=list)  # (plan, from) of earlier plans
    failure_rate: float = GENERATION_FAILURE


@dataclass
class Ids:
    """Next id per table: ids are assigned by the simulation, in write order."""

    next: dict[str, int] = field(default_factory=dict)

    def take(self, table: str) -> int:
        n = self.next.get(table, 1)
        self.next[table] = n + 1
        return n


class Sink:
    """Buffers generated rows per table and hands full batches to a writer callable."""

    def __init__(self, write: Callable[[str, list[tuple]], None], batch_rows: int) -> None:
        self._write = write
        self._batch = batch_rows
        self._buffers: dict[str, list[tuple]] = {}

    def add(self, table: str, row: tuple) -> None:
        buf = self._buffers.setdefault(table, [])
        buf.append(row)
        if len(buf) >= self._batch:
            self._write(table, buf)
            self._buffers[table] = []

    def flush(self) -> None:
        for table, buf in self._buffers.items():
            if buf:
                self._write(table, buf)
        self._buffers = {}


def _weighted(pairs: tuple[tuple[object, float], ...]) -> tuple[list[object], list[float]]:
    """Values and cumulative weights, for O(log n) weighted draws with one random()."""
    values, cum, total = [], [], 0.0
    for value, weight in pairs:
        total += weight
        values.append(value)
        cum.append(total)
    return values, [c / total for c in cum]


class Simulation:
    """Runs every user's life on one event heap and writes what the application would write."""

    def __init__(
        self,
        *,
        rng: random.Random,
        users: int,
        start_ts: int,
        end_ts: int,
        sink: Sink,
        ts: TimestampFormatter,
        event_ids: dict[str, int],
        price_rows: dict[tuple[str, str], tuple[int, str]],
        pack_rows: dict[int, tuple[int, str]],
        injections: dict[int, Injection],
        malformed_json_allowed: bool,
        abusers: dict[int, Abuse] | None = None,
    ) -> None:
        self.rng = rng
        self.n_users = users
        self.start_ts = start_ts
        self.end_ts = end_ts
        self.sink = sink
        self.ts = ts
        self.event_ids = event_ids
        self.price_rows = price_rows
        self.pack_rows = pack_rows
        self.injections = injections
        self.abusers = abusers or {}
        self.malformed_json_allowed = malformed_json_allowed
        self.ids = Ids()
        self.heap: list[tuple] = []
        self._order = 0
        self.users: list[User] = []
        self.anomalies: list[dict] = []
        self.quarantined: list[dict] = []
        self.notes: list[dict] = []
        self.last_clean_video: tuple[int, int] | None = None  # (video id, owner)
        self._archetypes = _weighted(ARCHETYPE_WEIGHTS)
        self._providers = _weighted(PROVIDERS)
        self._actions = _weighted(
            (
                (self._act_prompt, 25),
                (self._act_ai_image, 12),
                (self._act_idea, 9),
                (self._act_faceless, 18),
                (self._act_custom_video, 8),
                (self._act_speech, 8),
                (self._act_real_clone, 5),
                (self._act_animate, 8),
                (self._act_character, 1),
            )
        )
        self._restricted_actions = _weighted(
            ((self._act_prompt, 5), (self._act_ai_image, 3), (self._act_idea, 2))
        )

    # ------------------------------------------------------------------ scheduling

    def push(self, t: int, kind: int, user: User, payload: object = None) -> None:
        if t >= self.end_ts:
            return
        self._order += 1
        heapq.heappush(self.heap, (t, self._order, kind, user, payload))

    def call_at(self, t: int, user: User, fn: Callable[[int], object]) -> None:
        """Schedule a follow-up (a webhook, a queued job) of `user` at `t`."""
        self.push(t, K_CALL, user, fn)

    def draw(self, table: tuple[list, list[float]]):
        values, cum = table
        return values[bisect.bisect_left(cum, self.rng.random())]

    # ------------------------------------------------------------------ users

    def create_users(self) -> None:
        span = self.end_ts - self.start_ts
        rng = self.rng
        for uid in range(1, self.n_users + 1):
            injection = self.injections.get(uid)
            designated = injection if injection is not None else self.abusers.get(uid)
            if designated is not None:
                archetype = designated.archetype
                signup = self.start_ts + int(rng.random() * span * 0.2)
            else:
                archetype = self.draw(self._archetypes)
                signup = self.start_ts + int(rng.random() * (span - HOUR))
            interval = YEAR if archetype == YEARLY else MONTH
            plan = cat.PLANS[min(int(rng.random() ** 1.6 * 3), 2)]
            rate = min(rng.lognormvariate(-1.2, 0.9), 6.0)
            user = User(uid, signup, archetype, interval, plan, self.draw(self._providers), rate)
            user.injection = injection
            if injection is not None:
                injection.prepare(self, user)
            abuser = self.abusers.get(uid)
            if abuser is not None:
                user.abuse = abuser
                abuser.prepare(self, user)
            self.users.append(user)
            self.push(signup, K_SIGNUP, user)

    # ------------------------------------------------------------------ ledger

    def row(
        self,
        u: User,
        t: int,
        name: str,
        amount: int,
        index: int,
        ctype: str | None = None,
        cid: int | None = None,
        meta: str = EMPTY_META,
        *,
        created: int | bool | None = True,
        updated: int | bool | None = True,
        event_type: int | None = None,
        event_id: int | None = None,
        effect: str | None = None,
        tag: str | None = None,
    ) -> int:
        """Write one credit_histories row for `u` at write time `t`; return its id.

        The previous_amount and the pools come from the application's bookkeeping
        (`catalog.apply`). `created`/`updated` override the stored timestamps (None writes NULL,
        True the write time), `event_type`/`event_id` write stale or orphan values, and `tag` names
        a rule the row is known to violate (recorded in the manifest with the row's id).
        """
        event = cat.EVENTS_BY_NAME.get(name)
        if effect is None:  # an event outside the catalogue comes with its effect and type
            assert event is not None, name
            effect = event.effect
        if event_type is None:
            assert event is not None, name
            event_type = event.type
        written_type = event_type
        eid = event_id if event_id is not None else self.event_ids[name]
        event_value = int(event.value) if event is not None else amount
        prev, u.sub, u.pur = cat.apply(effect, amount, u.sub, u.pur)
        rid = self.ids.take("credit_histories")
        created_ts = t if created is True else created
        updated_ts = t if updated is True else updated
        label = event.label if event is not None else name.replace("_", " ").title()
        self.sink.add(
            "credit_histories",
            (
                rid,
                u.uid,
                eid,
                ctype,
                cid,
                name,
                label,
                index,
                event_value,
                amount,
                prev,
                written_type,
                meta,
                self.ts(created_ts),
                self.ts(updated_ts),
            ),
        )
        u.has_rows = True
        u.last_ts = t
        if u.deleted:
            self.flag("orphan_user", u, rid)
        if u.pending_break and effect != cat.PURCHASE:
            u.pending_break = False
            self.flag("chain_break", u, rid)
        if tag is not None:
            self.flag(tag, u, rid)
        return rid

    def flag(self, rule: str, u: User, rid: int) -> None:
        self.anomalies.append(
            {
                "rule": rule,
                "user_id": u.uid,
                "credit_history_id": rid,
                "entity_type": "credit_history",
                "entity_id": rid,
            }
        )

    def charge(
        self,
        u: User,
        t: int,
        name: str,
        index: int,
        ctype=None,
        cid=None,
        meta: str = EMPTY_META,
        **kw,
    ) -> int:
        """A spend priced exactly as the application prices it."""
        amount = cat.price(cat.EVENTS_BY_NAME[name], index)
        self.row(u, t, name, amount, index, ctype, cid, meta, **kw)
        return amount

    def can_afford(self, u: User, amount: int) -> bool:
        return u.sub + u.pur >= amount

    def afford_or_buy(self, u: User, t: int, amount: int) -> bool:
        """The app refuses a generation the pools cannot pay; some users buy a pack first."""
        if self.can_afford(u, amount):
            return True
        if u.restricted or u.status not in (TRIALING, ACTIVE):
            return False
        if self.rng.random() >= BUY_WHEN_SHORT:
            return False
        self.buy_pack(u, t, amount - u.sub - u.pur)
        return self.can_afford(u, amount)

    def buy_pack(self, u: User, t: int, shortfall: int, *, may_fail: bool = True) -> None:
        """Checkout of the smallest extra-credit pack covering `shortfall` (a failed payment
        writes a purchases row and no ledger row)."""
        credits = next((c for c, _ in cat.CREDIT_PACKS if c >= shortfall), cat.CREDIT_PACKS[-1][0])
        while True:
            plan_row, _ = self.pack_rows[credits]
            pid = self.ids.take("purchases")
            failed = may_fail and self.rng.random() < PURCHASE_FAILURE
            status = FAILED if failed else SUCCEEDED
            self.sink.add(
                "purchases",
                (pid, u.uid, plan_row, f"pi_{u.uid:06d}{pid:08d}", status, self.ts(t), self.ts(t)),
            )
            if not failed:
                meta = json.dumps({"purchase_id": pid, "plan_id": plan_row})
                self.row(u, t, cat.CUSTOM_CREDIT_PURCHASED, credits, credits, meta=meta)
                return
            if self.rng.random() < 0.5:
                return
            may_fail = False  # retried with another card

    def ensure_funds(self, u: User, t: int, amount: int) -> None:
        """Make a forced spend affordable with a clean pack purchase (faults stay isolated)."""
        if not self.can_afford(u, amount):
            self.buy_pack(u, t, amount - u.sub - u.pur, may_fail=False)
            while not self.can_afford(u, amount):
                self.buy_pack(u, t, amount - u.sub - u.pur, may_fail=False)

    def ensure_subscription_pool(self, u: User, t: int, amount: int) -> None:
        """Make the subscription pool alone cover `amount` with a clean admin bonus."""
        if u.sub < amount:
            self.admin_bonus(u, t, amount - u.sub + 50)

    def admin_bonus(self, u: User, t: int, credits: int, **kw) -> int:
        meta = json.dumps({"admin_id": 1 + credits % 7, "reason": "support goodwill"})
        return self.row(
            u,
            t,
            cat.ADMIN_CREDIT_ADDED,
            cat.price(cat.EVENTS_BY_NAME[cat.ADMIN_CREDIT_ADDED], credits),
            credits,
            meta=meta,
            **kw,
        )

    # ------------------------------------------------------------------ content

    def new_video(
        self,
        u: User,
        t: int,
        kind: str,
        status: str,
        done: int,
        exports: int = 0,
        *,
        write: bool = True,
        title: str | None = None,
    ) -> int:
        vid = self.ids.take("videos")
        if write:
            title = title if title is not None else f"{kind.title()} video {vid}"
            self.sink.add(
                "videos",
                (
                    vid,
                    u.uid,
                    title,
                    kind,
                    self.rng.choice(VIDEO_PROVIDERS),
                    status,
                    exports,
                    0,
                    self.ts(t),
                    self.ts(done),
                ),
            )
            if u.injection is None and not u.deleted:
                self.last_clean_video = (vid, u.uid)
        return vid

    def new_faceless(
        self, u: User, t: int, video_status: str, done: int, exports: int = 0, *, write: bool = True
    ) -> tuple[int, int, int]:
        """A faceless and its render video; returns (faceless id, video id, duration)."""
        vid = self.new_video(u, t, VIDEO_FACELESS, video_status, done, exports, write=write)
        fid = self.ids.take("facelesses")
        duration = self.rng.randint(15, 90)
        if write:
            self.sink.add(
                "facelesses",
                (
                    fid,
                    u.uid,
                    "ai_visuals",
                    vid,
                    duration,
                    self.rng.choice(GENRES),
                    self.ts(t),
                    self.ts(done),
                ),
            )
        return fid, vid, duration

    def new_clone(self, u: User, t: int, status: str, done: int) -> int:
        cid = self.ids.take("real_clones")
        self.sink.add(
            "real_clones",
            (cid, u.uid, self.rng.choice(CLONE_PROVIDERS), status, 0, self.ts(t), self.ts(done)),
        )
        u.last_clone = cid
        return cid

    def new_speech(self, u: User, t: int, status: str, done: int) -> int:
        sid = self.ids.take("speeches")
        self.sink.add(
            "speeches",
            (
                sid,
                u.uid,
                u.last_clone,
                self.rng.choice(SPEECH_PROVIDERS),
                status,
                self.ts(t),
                self.ts(done),
            ),
        )
        return sid

    def new_caption(self, u: User, t: int, model_type: str, model_id: int) -> None:
        cap = self.ids.take("captions")
        self.sink.add(
            "captions",
            (
                cap,
                u.uid,
                model_type,
                model_id,
                self.rng.choice(CAPTION_PROVIDERS),
                self.ts(t),
                self.ts(t),
            ),
        )

    def outcome(self, t: int, in_progress: str, u: User | None = None) -> tuple[str, int]:
        """A generation's final status as of the snapshot and when it got there."""
        done = t + self.rng.randint(2 * MINUTE, 30 * MINUTE)
        if done >= self.end_ts:
            return in_progress, t
        if self.rng.random() < (GENERATION_FAILURE if u is None else u.failure_rate):
            return FAILED, done
        return COMPLETED, done

    def refund_later(self, u: User, done: int, amount: int, ctype: str, cid: int) -> None:
        """A failed generation is refunded by the failure webhook, for the charge it reverses."""
        self.call_at(done, u, lambda t: self.refund(u, t, amount, ctype, cid))

    def refund(self, u: User, t: int, amount: int, ctype: str | None, cid: int | None, **kw) -> int:
        return self.row(u, t, cat.REFUNDED_CREDITS, amount, amount, ctype, cid, **kw)

    def unextracted_id(self, alias: str) -> int:
        return self.ids.take(f"alias:{alias}")

    # ------------------------------------------------------------------ actions

    def _act_prompt(self, u: User, t: int) -> None:
        index = self.rng.randint(150, 3000)
        amount = cat.price(cat.EVENTS_BY_NAME[cat.CONTENT_PROMPT_REQUESTED], index)
        if self.afford_or_buy(u, t, amount):
            if self.rng.random() < 0.6:
                ctype, cid = cat.ALIAS_GENERATOR, self.unextracted_id(cat.ALIAS_GENERATOR)
            else:
                ctype, cid = None, None
            self.charge(
                u,
                t,
                cat.CONTENT_PROMPT_REQUESTED,
                index,
                ctype,
                cid,
                meta='{"model": "gpt-4o-mini"}',
            )

    def _act_ai_image(self, u: User, t: int) -> None:
        if self.afford_or_buy(u, t, 1):
            if self.rng.random() < 0.7:
                ctype, cid = cat.ALIAS_MEDIA, self.unextracted_id(cat.ALIAS_MEDIA)
            else:
                ctype, cid = None, None
            self.charge(u, t, cat.AI_IMAGE_GENERATED, 1, ctype, cid)

    def _act_idea(self, u: User, t: int) -> None:
        if self.afford_or_buy(u, t, 15):
            kid = self.unextracted_id(cat.ALIAS_KEYWORD)
            self.charge(u, t, cat.IDEA_DISCOVERED, 1, cat.ALIAS_KEYWORD, kid)

    def _act_animate(self, u: User, t: int) -> None:
        if self.afford_or_buy(u, t, 10):
            mid = self.unextracted_id(cat.ALIAS_MEDIA)
            self.charge(u, t, cat.IMAGE_ANIMATED, self.rng.randint(3, 8), cat.ALIAS_MEDIA, mid)

    def _act_character(self, u: User, t: int) -> None:
        if self.afford_or_buy(u, t, 50):
            chid = self.unextracted_id(cat.ALIAS_CHARACTER)
            self.charge(u, t, cat.CUSTOM_CHARACTER_PURCHASED, 1, cat.ALIAS_CHARACTER, chid)

    def _act_faceless(self, u: User, t: int) -> None:
        rng = self.rng
        duration = rng.randint(15, 90)
        images = rng.randint(3, 12) if rng.random() < 0.3 else 0
        need = duration + (images if images else 0)
        if not self.afford_or_buy(u, t, need):
            if rng.random() < 0.25:
                self.new_faceless(u, t, DRAFT, t)
            return
        status, done = self.outcome(t, RENDERING, u)
        exports = []
        if status == COMPLETED:
            at = done
            while rng.random() < 0.4:
                at += rng.randint(HOUR, 3 * DAY)
                if at >= self.end_ts:
                    break
                exports.append(at)
        fid, vid, _ = self.new_faceless(u, t, status, done, len(exports))
        amount = self.charge(u, t, cat.FACELESS_VIDEO_GENERATED, duration, cat.ALIAS_FACELESS, fid)
        if images:
            self.charge(u, t, cat.BULK_AI_IMAGES_GENERATED, images, cat.ALIAS_FACELESS, fid)
        if status == FAILED:
            self.refund_later(u, done, amount, cat.ALIAS_FACELESS, fid)
        elif status == COMPLETED:
            if rng.random() < 0.3:
                self.new_caption(u, done, cat.ALIAS_FACELESS, fid)
            for at in exports:
                # mypy cannot infer a lambda with a default argument (python/mypy#15459)
                self.call_at(at, u, lambda when, vid=vid: self._export(u, when, vid))  # type: ignore[misc]

    def _export(self, u: User, t: int, vid: int) -> None:
        index = self.rng.randint(3, 20)
        if self.can_afford(u, index):
            self.charge(u, t, cat.FACELESS_VIDEO_EXPORTED, index, cat.ALIAS_VIDEO, vid)

    def _act_custom_video(self, u: User, t: int) -> None:
        rng = self.rng
        index = rng.randint(6, 60)
        if not self.afford_or_buy(u, t, index):
            if rng.random() < 0.25:
                self.new_video(u, t, VIDEO_CUSTOM, DRAFT, t)
            return
        status, done = self.outcome(t, RENDERING, u)
        vid = self.new_video(u, t, VIDEO_CUSTOM, status, done)
        amount = self.charge(u, t, cat.VIDEO_GENERATED, index, cat.ALIAS_VIDEO, vid)
        if status == FAILED:
            self.refund_later(u, done, amount, cat.ALIAS_VIDEO, vid)
        elif status == COMPLETED and rng.random() < 0.25:
            minutes = rng.randint(1, 4)
            self.new_caption(u, done, cat.ALIAS_VIDEO, vid)
            self.call_at(done + MINUTE, u, lambda when: self._transcribe(u, when, vid, minutes))

    def _transcribe(self, u: User, t: int, vid: int, minutes: int) -> None:
        if self.can_afford(u, minutes):
            self.charge(u, t, cat.AUDIO_TRANSCRIPTION, minutes, cat.ALIAS_VIDEO, vid)

    def _act_speech(self, u: User, t: int) -> None:
        index = self.rng.randint(7, 60)
        if not self.afford_or_buy(u, t, index):
            return
        status, done = self.outcome(t, PROCESSING, u)
        sid = self.new_speech(u, t, status, done)
        amount = self.charge(u, t, cat.TEXT_TO_SPEECH_GENERATED, index, cat.ALIAS_SPEECH, sid)
        if status == FAILED:
            self.refund_later(u, done, amount, cat.ALIAS_SPEECH, sid)

    def _act_real_clone(self, u: User, t: int) -> None:
        rng = self.rng
        index = rng.randint(50, 180)
        preview = rng.randint(57, 120) if rng.random() < 0.3 else 0
        if not self.afford_or_buy(u, t, index + preview):
            if rng.random() < 0.25:
                self.new_clone(u, t, DRAFT, t)
            return
        status, done = self.outcome(t, GENERATING, u)
        cid = self.new_clone(u, t, status, done)
        if preview:
            self.charge(u, t, cat.REAL_CLONE_AND_TTS, preview, cat.ALIAS_REAL_CLONE, cid)
        amount = self.charge(u, t, cat.REAL_CLONE_GENERATED, index, cat.ALIAS_REAL_CLONE, cid)
        if status == FAILED:
            self.refund_later(u, done, amount, cat.ALIAS_REAL_CLONE, cid)

    # ------------------------------------------------------------------ life cycle

    def _on_signup(self, u: User, t: int) -> None:
        if u.archetype == NEVER:
            return
        u.status = TRIALING
        u.trial_end = t + TRIAL_SECONDS
        meta = json.dumps({"plan": u.plan.slug, "interval": u.interval})
        self.row(
            u, t, cat.SUBSCRIBE_TO_TRIAL, u.plan.trial_credits, u.plan.trial_credits, meta=meta
        )
        self.push(u.trial_end, K_TRIAL_END, u)
        if u.rate > 0:
            self.push(t + MINUTE + int(self.rng.expovariate(u.rate) * DAY), K_ACTION, u)

    def monthly_credits(self, u: User) -> int:
        if u.interval == YEAR:
            return u.plan.yearly_full_credits // 12
        return u.plan.monthly_credits

    def _on_trial_end(self, u: User, t: int) -> None:
        if u.archetype == TRIAL_CHURN:
            u.status = CANCELED
            u.ends_at = t
            u.active_until = t + 3 * DAY
            return
        u.status = ACTIVE
        u.anchor = t
        self._pay(u, t)
        if u.interval == YEAR:
            self.push(first_of_next_month(t) + YEARLY_RELEASE_OFFSET + u.uid % 50, K_RELEASE, u)
            self.push(add_months(t, 12), K_RENEW, u)
        else:
            self.schedule_monthly_renewal(u, add_months(t, 1))
            if (
                u.injection is None
                and u.abuse is None
                and self.rng.random() < UPGRADE_SHARE
                and u.plan.tier < 3
            ):
                self.call_at(
                    t + self.rng.randint(5 * DAY, 200 * DAY), u, lambda when: self._upgrade(u, when)
                )
        if u.injection is None and u.abuse is None and self.rng.random() < ADMIN_BONUS_SHARE:
            self.call_at(
                t + self.rng.randint(DAY, 150 * DAY),
                u,
                lambda when: self.admin_bonus(u, when, self.rng.choice((50, 100, 250))),
            )
        if u.injection is not None:
            u.injection.converted(self, u, t)
        if u.abuse is not None:
            u.abuse.converted(self, u, t)

    def schedule_monthly_renewal(self, u: User, at: int) -> None:
        """Push the next renewal, deciding now whether it will be a cancellation (so that the
        engagement of a user about to leave can fade in the weeks before)."""
        u.next_renew_at = at
        if u.injection is None and u.abuse is None and u.interval == MONTH:
            u.cancel_next = self.rng.random() < MONTHLY_CHURN
            u.fades = u.cancel_next and self.rng.random() < FADE_SHARE
        self.push(at, K_RENEW, u)

    def action_rate(self, u: User, t: int) -> float:
        """Actions per day at `t`: a fading user does a fraction of their usual."""
        if u.fades and u.next_renew_at is not None and t >= u.next_renew_at - FADE_SECONDS:
            return u.rate * FADE_FACTOR
        return u.rate

    def _pay(self, u: User, t: int, meta: str | None = None) -> int:
        credits = self.monthly_credits(u)
        if meta is None:
            meta = json.dumps({"invoice": f"in_{u.uid:06d}{u.renewals:03d}"})
        return self.row(u, t, cat.SUBSCRIPTION_AMOUNT_PAID, credits, credits, meta=meta)

    def _on_renew(self, u: User, t: int) -> None:
        if u.status != ACTIVE:
            return
        if u.injection is None and u.abuse is None and u.interval == MONTH:
            if u.cancel_next:
                u.status, u.ends_at, u.active_until = CANCELED, t, t + 7 * DAY
                return
            if self.rng.random() < MONTHLY_PAST_DUE:
                u.status, u.active_until = PAST_DUE, t + 3 * DAY
                return
        u.renewals += 1
        meta = None
        if u.injection is not None:
            meta = u.injection.renewal_meta(self, u, t)
        rid = self._pay(u, t, meta)
        if u.injection is not None:
            u.injection.renewed(self, u, t, rid)
        assert u.anchor is not None  # set when the trial converted; only paying users renew
        if u.interval == YEAR:
            self.push(add_months(u.anchor, 12 * (u.renewals + 1)), K_RENEW, u)
        else:
            self.schedule_monthly_renewal(u, add_months(u.anchor, u.renewals + 1))

    def _on_release(self, u: User, t: int) -> None:
        if u.status != ACTIVE:
            return
        u.releases += 1
        self.release(u, t)
        if u.injection is not None:
            u.injection.released(self, u, t)
        self.push(first_of_next_month(t) + YEARLY_RELEASE_OFFSET + u.uid % 50, K_RELEASE, u)

    def release(self, u: User, t: int, **kw) -> int:
        credits = self.monthly_credits(u)
        meta = json.dumps({"month": month_key(t)})
        amount = cat.price(cat.EVENTS_BY_NAME[cat.MONTHLY_CREDITS_ADDED], credits)
        return self.row(u, t, cat.MONTHLY_CREDITS_ADDED, amount, credits, meta=meta, **kw)

    def _upgrade(self, u: User, t: int) -> None:
        if u.status != ACTIVE or u.interval != MONTH or u.plan.tier >= 3:
            return
        assert u.anchor is not None  # an active monthly subscription has an anchor
        period_start = u.anchor if u.renewals == 0 else add_months(u.anchor, u.renewals)
        period_end = add_months(u.anchor, u.renewals + 1)
        new = cat.PLANS[u.plan.tier]
        left = max(period_end - t, 0) / max(period_end - period_start, 1)
        credits = max(1, int(new.monthly_credits * left))
        meta = json.dumps({"from": u.plan.slug, "to": new.slug})
        u.plan_history.append((u.plan, t))
        u.plan = new
        self.row(u, t, cat.PRORATED_CREDITS, credits, credits, meta=meta)

    def _on_action(self, u: User, t: int) -> None:
        if t > u.active_until:
            return
        table = self._restricted_actions if u.restricted else self._actions
        self.draw(table)(u, t)
        self.push(t + 1 + int(self.rng.expovariate(self.action_rate(u, t)) * DAY), K_ACTION, u)

    # ------------------------------------------------------------------ run

    def run(self) -> None:
        self.create_users()
        handlers = {
            K_SIGNUP: self._on_signup,
            K_TRIAL_END: self._on_trial_end,
            K_RENEW: self._on_renew,
            K_RELEASE: self._on_release,
            K_ACTION: self._on_action,
        }
        heap = self.heap
        pop = heapq.heappop
        while heap:
            t, _, kind, u, payload = pop(heap)
            if u.frozen:
                continue
            if kind == K_CALL:
                payload(t)
            else:
                handlers[kind](u, t)
        self.sink.flush()

    # ------------------------------------------------------------------ final snapshot

    def user_rows(self):
        """The users table as the application stores it at the end of the history."""
        for u in self.users:
            if u.deleted:
                continue
            remaining = u.sub if u.has_rows else None
            extra = u.pur
            if u.injection is not None:
                remaining, extra = u.injection.stored_pools(self, u, remaining, extra)
            first = FIRST_NAMES[u.uid * 7 % len(FIRST_NAMES)]
            last = LAST_NAMES[u.uid * 11 % len(LAST_NAMES)]
            plan_id = None
            monthly = None
            if u.status is not None:
                plan_id = self.price_rows[(u.plan.slug, u.interval)][0]
                monthly = self.monthly_credits(u)
            yield (
                u.uid,
                f"{first} {last}",
                f"{first.lower()}.{last.lower()}.{u.uid}@example.test",
                plan_id,
                u.provider,
                self.ts(u.trial_end),
                self.ts(u.ends_at),
                remaining,
                monthly,
                extra,
                self.ts(u.signup),
                self.ts(max(u.last_ts, u.signup)),
            )

    def subscription_rows(self):
        """Cashier's subscriptions table at the end of the history.

        A plan change ends the old subscription (`canceled`, `ends_at` at the swap) and creates a
        new one, so the table holds each user's plan history: the plan a user held at any moment.
        """
        for u in self.users:
            if u.deleted or u.status is None:
                continue
            since = u.signup
            for old_plan, swapped_at in u.plan_history:
                sid = self.ids.take("subscriptions")
                old_price = self.price_rows[(old_plan.slug, u.interval)][1]
                yield (
                    sid,
                    u.uid,
                    "default",
                    f"sub_{u.uid:08d}_{sid}",
                    CANCELED,
                    old_price,
                    1,
                    self.ts(u.trial_end),
                    self.ts(u.anchor),
                    self.ts(swapped_at),
                    self.ts(since),
                    self.ts(swapped_at),
                )
                since = swapped_at
            sid = self.ids.take("subscriptions")
            price_id = self.price_rows[(u.plan.slug, u.interval)][1]
            yield (
                sid,
                u.uid,
                "default",
                f"sub_{u.uid:08d}",
                u.status,
                price_id,
                1,
                self.ts(u.trial_end),
                self.ts(u.anchor),
                self.ts(u.ends_at),
                self.ts(since),
                self.ts(max(u.last_ts, u.signup)),
            )
