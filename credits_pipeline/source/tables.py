"""The operational contract's tables, written down once.

Everything that touches `syllaby_v2` — the demo generator that writes it, the extraction that reads
it, the pandera models that validate it and the warehouse DDL that lands it — needs the same list of
tables and columns. It lives here, as plain data, so that the column list the pipeline may read
(`shared/contract/syllaby_v2.mysql.sql`) exists in exactly one place. Personal data (`users.name`,
`users.email`) is listed for the demo generator, which must create a realistic table, but is marked
`extract=False`: the extraction never names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ColumnKind = Literal["id", "int", "float", "str", "ts", "json", "bool"]


@dataclass(frozen=True)
class Column:
    """One column of the contract.

    `kind` is the logical type: `id` (unsigned 64-bit key), `int`, `float`, `str`, `ts` (UTC
    timestamp, second precision), `json` (JSON text) and `bool` (MySQL TINYINT(1)); each kind's type
    in every engine is one row of `column_types.py`. `nullable` is the source's own constraint;
    `extract` is False for columns the pipeline must never copy.
    `required` says whether the ledger replay, the rules or the extraction itself need the column:
    a source lacking a required column fails that table; an optional one is loaded as NULL with a
    WARN check (`source/drift.py`), so a source older than the contract still reconciles.
    """

    name: str
    kind: ColumnKind
    nullable: bool = True
    extract: bool = True
    length: int = 255
    required: bool = True


@dataclass(frozen=True)
class Table:
    """One table of `syllaby_v2` and how the pipeline extracts it.

    `strategy` says how a table is read: `ledger` (append-only, daily partitions by `created_at`),
    `snapshot` (read whole inside the consistent cut, for the balances), `merge` (in-place updates:
    read by an `updated_at` watermark and merged by id) or `full` (small catalogs, replaced whole).
    """

    name: str
    columns: tuple[Column, ...]
    strategy: Literal["ledger", "snapshot", "merge", "full"]
    description: str
    alias: str | None = None  # morph alias used in credit_histories.creditable_type
    indexes: tuple[tuple[str, ...], ...] = field(default=())

    @property
    def extracted_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.extract)

    @property
    def extracted_names(self) -> list[str]:
        return [c.name for c in self.extracted_columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name}.{name} is not a column of the contract")


def _ts(created: bool = False, updated: bool = False) -> tuple[Column, Column]:
    """`created_at` and `updated_at`, each required or optional (merges read by `updated_at`)."""
    return (
        Column("created_at", "ts", required=created),
        Column("updated_at", "ts", required=updated),
    )


OPTIONAL = False  # `required=OPTIONAL`: the column may be absent from an older source


CREDIT_EVENTS = Table(
    "credit_events",
    (
        Column("id", "id", nullable=False),
        Column("name", "str", nullable=False),
        Column("type", "int", nullable=False),
        Column("calculation_type", "str", nullable=False),
        Column("value", "float", nullable=False),
        Column("min_amount", "float"),
        *_ts(),
    ),
    strategy="full",
    description="The catalog of credit event kinds: direction (`type` 1 adds, 2 spends), pricing "
    "(`calculation_type`, `value`, `min_amount`).",
)

USERS = Table(
    "users",
    (
        Column("id", "id", nullable=False),
        Column("name", "str", nullable=False, extract=False),
        Column("email", "str", nullable=False, extract=False),
        Column("plan_id", "int", required=OPTIONAL),
        Column("subscription_provider", "int", nullable=False, required=OPTIONAL),
        Column("trial_ends_at", "ts", required=OPTIONAL),
        Column("subscription_ends_at", "ts", required=OPTIONAL),
        Column("remaining_credit_amount", "int"),
        Column("monthly_credit_amount", "int", required=OPTIONAL),
        Column("extra_credits", "int", nullable=False),
        *_ts(),
    ),
    strategy="snapshot",
    description="Users and their two stored credit pools: `remaining_credit_amount` (subscription "
    "pool, NULL = 0) and `extra_credits` (purchased pool). Name and e-mail are never extracted.",
)

CREDIT_HISTORIES = Table(
    "credit_histories",
    (
        Column("id", "id", nullable=False),
        Column("user_id", "id", nullable=False),
        Column("credit_events_id", "id", nullable=False),
        Column("creditable_type", "str"),
        Column("creditable_id", "id"),
        Column("description", "str", required=OPTIONAL),
        Column("label", "str", required=OPTIONAL),
        Column("calculative_index", "int", nullable=False),
        Column("event_value", "int", nullable=False),
        Column("amount", "int", nullable=False),
        Column("previous_amount", "int", nullable=False),
        Column("event_type", "int", nullable=False),
        Column("meta", "json"),
        *_ts(created=True, updated=True),
    ),
    strategy="ledger",
    description="The credit ledger: one row per credit transaction, unsigned `amount` with its "
    "direction in `event_type`, and a balance snapshot in `previous_amount`.",
    # the contract's two indexes and no more: no index on `created_at` alone, so a source built
    # from this catalog (demo data, tests, benchmarks) scans the ledger for a filter on days, as
    # the application's database does
    indexes=(("creditable_type", "creditable_id"), ("user_id", "created_at")),
)

PLANS = Table(
    "plans",
    (
        Column("id", "id", nullable=False),
        Column("parent_id", "id", required=OPTIONAL),
        Column("plan_id", "str", nullable=False, required=OPTIONAL),
        Column("name", "str", nullable=False, required=OPTIONAL),
        Column("type", "str", required=OPTIONAL),
        Column("price", "float", nullable=False, required=OPTIONAL),
        Column("currency", "str", required=OPTIONAL),
        Column("slug", "str", nullable=False, required=OPTIONAL),
        Column("active", "bool", nullable=False, required=OPTIONAL),
        Column("meta", "json", required=OPTIONAL),
        *_ts(),
    ),
    strategy="full",
    description="Stripe products and their prices; price rows carry the plan's credits in `meta` "
    "(`full_credits`, `trial_credits`, or `credits` for one-time packs).",
)

SUBSCRIPTIONS = Table(
    "subscriptions",
    (
        Column("id", "id", nullable=False),
        Column("user_id", "id", nullable=False, required=OPTIONAL),
        Column("type", "str", nullable=False, required=OPTIONAL),
        Column("stripe_id", "str", nullable=False, required=OPTIONAL),
        Column("stripe_status", "str", nullable=False, required=OPTIONAL),
        Column("stripe_price", "str", required=OPTIONAL),
        Column("quantity", "int", required=OPTIONAL),
        Column("trial_ends_at", "ts", required=OPTIONAL),
        Column("cycle_anchor_at", "ts", required=OPTIONAL),
        Column("ends_at", "ts", required=OPTIONAL),
        *_ts(updated=True),
    ),
    strategy="merge",
    description="Laravel Cashier subscriptions: status, price (`stripe_price` = plans.plan_id), "
    "trial end, billing cycle anchor and end.",
)

PURCHASES = Table(
    "purchases",
    (
        Column("id", "id", nullable=False),
        Column("user_id", "id", nullable=False, required=OPTIONAL),
        Column("plan_id", "id", nullable=False, required=OPTIONAL),
        Column("payment_intent", "str", required=OPTIONAL),
        Column("status", "str", required=OPTIONAL),
        *_ts(updated=True),
    ),
    strategy="merge",
    description="One-time checkouts such as extra-credit packs (`plan_id` = plans.id of a "
    "one_time price row).",
)

VIDEOS = Table(
    "videos",
    (
        Column("id", "id", nullable=False),
        Column("user_id", "id", nullable=False),
        Column("title", "str", required=OPTIONAL),
        Column("type", "str"),
        Column("provider", "str", required=OPTIONAL),
        Column("status", "str"),
        Column("exports", "int", nullable=False, required=OPTIONAL),
        Column("retries", "int", nullable=False, required=OPTIONAL),
        *_ts(updated=True),
    ),
    strategy="merge",
    alias="video",
    description="Rendered videos (alias `video`); a faceless's render is its video.",
)

FACELESSES = Table(
    "facelesses",
    (
        Column("id", "id", nullable=False),
        Column("user_id", "id", nullable=False),
        Column("type", "str", required=OPTIONAL),
        Column("video_id", "id", nullable=False),
        Column("estimated_duration", "int", required=OPTIONAL),
        Column("genre_name", "str", required=OPTIONAL),
        *_ts(updated=True),
    ),
    strategy="merge",
    alias="faceless",
    description="Faceless videos (alias `faceless`), charged by `faceless_video_generated`.",
)

REAL_CLONES = Table(
    "real_clones",
    (
        Column("id", "id", nullable=False),
        Column("user_id", "id", nullable=False),
        Column("provider", "str", required=OPTIONAL),
        Column("status", "str"),
        Column("retries", "int", nullable=False, required=OPTIONAL),
        *_ts(updated=True),
    ),
    strategy="merge",
    alias="real-clone",
    description="Real-clone (avatar) videos (alias `real-clone`), charged by "
    "`real_clone_generated`.",
)

SPEECHES = Table(
    "speeches",
    (
        Column("id", "id", nullable=False),
        Column("user_id", "id"),
        Column("real_clone_id", "id", required=OPTIONAL),
        Column("provider", "str", nullable=False, required=OPTIONAL),
        Column("status", "str"),
        *_ts(updated=True),
    ),
    strategy="merge",
    alias="speech",
    description="Text-to-speech output (alias `speech`), charged by `text_to_speech_generated`.",
)

CAPTIONS = Table(
    "captions",
    (
        Column("id", "id", nullable=False),
        Column("user_id", "id", nullable=False, required=OPTIONAL),
        Column("model_type", "str", nullable=False, required=OPTIONAL),
        Column("model_id", "id", nullable=False, required=OPTIONAL),
        Column("provider", "str", length=40, required=OPTIONAL),
        *_ts(updated=True),
    ),
    strategy="merge",
    description="Captions of a faceless or a video; never charged (transcription is charged as "
    "`audio_transcription`).",
)

TABLES: tuple[Table, ...] = (
    CREDIT_EVENTS,
    USERS,
    CREDIT_HISTORIES,
    PLANS,
    SUBSCRIPTIONS,
    PURCHASES,
    VIDEOS,
    FACELESSES,
    REAL_CLONES,
    SPEECHES,
    CAPTIONS,
)
TABLES_BY_NAME: dict[str, Table] = {t.name: t for t in TABLES}

# Morph aliases of section 1 of the contract: those whose table the pipeline extracts, and those
# that name tables it does not (never judged by `orphan_creditable`).
EXTRACTED_ALIASES: dict[str, str] = {t.alias: t.name for t in TABLES if t.alias}
UNEXTRACTED_ALIASES: frozenset[str] = frozenset({"keyword", "generator", "media", "character"})
