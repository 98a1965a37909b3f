"""The application's own price list, as the demo generator's private copy.

The generator plays the web application, which ships its event catalog and Stripe plans as seed
data. The pipeline keeps its own copy of the same catalog (`credits_pipeline/source/catalog.py`) and
replays the ledger with it; the tests compare the two worlds, so this copy is deliberately written
separately and must not be imported from, or shared with, the pipeline. Pricing and bookkeeping
helpers here are written the way the application computes them (IEEE doubles, `/ 2.0`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ADD = 1  # credit_events.type: credits added
SPEND = 2  # credit_events.type: credits spent

FIXED = "fixed"
CALCULATIVE = "calculative"

# Effects on the two pools (contract section 2).
RESET = "reset"
EFFECT_ADD = "add"
PURCHASE = "purchase"
EFFECT_SPEND = "spend"


@dataclass(frozen=True)
class Event:
    """One row of the shipped `credit_events` seed, plus how the app applies it to the pools."""

    name: str
    type: int
    calculation_type: str
    value: float
    min_amount: float | None
    effect: str
    label: str


SUBSCRIPTION_AMOUNT_PAID = "subscription_amount_paid"
SUBSCRIBE_TO_TRIAL = "subscribe_to_trial"
PRORATED_CREDITS = "prorated_credits"
MONTHLY_CREDITS_ADDED = "monthly_credits_added"
ADMIN_CREDIT_ADDED = "admin_credit_added"
CUSTOM_CREDIT_PURCHASED = "custom_credit_purchased"
REFUNDED_CREDITS = "refunded_credits"
FACELESS_VIDEO_GENERATED = "faceless_video_generated"
FACELESS_VIDEO_EXPORTED = "faceless_video_exported"
IMAGE_ANIMATED = "image_animated"
BULK_AI_IMAGES_GENERATED = "bulk_ai_images_generated"
REAL_CLONE_GENERATED = "real_clone_generated"
REAL_CLONE_AND_TTS = "real_clone_and_text_to_speech"
TEXT_TO_SPEECH_GENERATED = "text_to_speech_generated"
AUDIO_TRANSCRIPTION = "audio_transcription"
VIDEO_GENERATED = "video_generated"
AI_IMAGE_GENERATED = "ai_image_generated"
CONTENT_PROMPT_REQUESTED = "content_prompt_requested"
IDEA_DISCOVERED = "idea_discovered"
CUSTOM_CHARACTER_PURCHASED = "custom_character_purchased"

EVENTS: tuple[Event, ...] = (
    Event(SUBSCRIPTION_AMOUNT_PAID, ADD, CALCULATIVE, 20, None, RESET, "Subscription Renewed"),
    Event(SUBSCRIBE_TO_TRIAL, ADD, FIXED, 500, None, RESET, "Trial Started"),
    Event(PRORATED_CREDITS, ADD, FIXED, 0, None, RESET, "Plan Changed"),
    Event(MONTHLY_CREDITS_ADDED, ADD, CALCULATIVE, 1, None, EFFECT_ADD, "Monthly Credits Added"),
    Event(ADMIN_CREDIT_ADDED, ADD, CALCULATIVE, 1, None, EFFECT_ADD, "Credits Added By Admin"),
    Event(CUSTOM_CREDIT_PURCHASED, ADD, FIXED, 0, None, PURCHASE, "Credits Purchased"),
    Event(REFUNDED_CREDITS, ADD, FIXED, 0, None, EFFECT_ADD, "Credits Refunded"),
    Event(FACELESS_VIDEO_GENERATED, SPEND, CALCULATIVE, 2, 13, EFFECT_SPEND, "Faceless Video"),
    Event(FACELESS_VIDEO_EXPORTED, SPEND, CALCULATIVE, 2, 3, EFFECT_SPEND, "Video Export"),
    Event(IMAGE_ANIMATED, SPEND, FIXED, 10, 10, EFFECT_SPEND, "Image Animation"),
    Event(BULK_AI_IMAGES_GENERATED, SPEND, CALCULATIVE, 2, 3, EFFECT_SPEND, "AI Images"),
    Event(REAL_CLONE_GENERATED, SPEND, CALCULATIVE, 2, 50, EFFECT_SPEND, "Real Clone Video"),
    Event(REAL_CLONE_AND_TTS, SPEND, CALCULATIVE, 2, 57, EFFECT_SPEND, "Real Clone + Voice"),
    Event(TEXT_TO_SPEECH_GENERATED, SPEND, CALCULATIVE, 2, 7, EFFECT_SPEND, "Text To Speech"),
    Event(AUDIO_TRANSCRIPTION, SPEND, CALCULATIVE, 2, 1, EFFECT_SPEND, "Captions"),
    Event(VIDEO_GENERATED, SPEND, CALCULATIVE, 2, 6, EFFECT_SPEND, "Video Render"),
    Event(AI_IMAGE_GENERATED, SPEND, FIXED, 1, 1, EFFECT_SPEND, "AI Image"),
    Event(CONTENT_PROMPT_REQUESTED, SPEND, CALCULATIVE, 0.01, 1, EFFECT_SPEND, "AI Writer"),
    Event(IDEA_DISCOVERED, SPEND, FIXED, 15, 15, EFFECT_SPEND, "Idea Discovery"),
    Event(CUSTOM_CHARACTER_PURCHASED, SPEND, FIXED, 50, 50, EFFECT_SPEND, "Custom Character"),
)
EVENTS_BY_NAME: dict[str, Event] = {e.name: e for e in EVENTS}

# Events deleted from the catalog long ago whose rows survive in the ledger (orphan_event): their
# ids lie past the seeded catalog, as rows of a later seeder would.
LEGACY_EVENTS: tuple[tuple[int, str, int], ...] = (
    (23, "referral_bonus_added", ADD),
    (27, "legacy_avatar_generated", SPEND),
    (31, "welcome_credits_added", ADD),
)

# Morph aliases the application writes into credit_histories.creditable_type.
ALIAS_FACELESS = "faceless"
ALIAS_REAL_CLONE = "real-clone"
ALIAS_VIDEO = "video"
ALIAS_SPEECH = "speech"
ALIAS_KEYWORD = "keyword"
ALIAS_GENERATOR = "generator"
ALIAS_MEDIA = "media"
ALIAS_CHARACTER = "character"


def price(event: Event, calculative_index: int) -> int:
    """The amount the application records for `event` at `calculative_index`.

    Section 1 of the contract, in the application's order: resets and purchases move the index,
    other fixed events their value, calculative spends `ceil(value * (index / 2.0))` and
    calculative adds `ceil(value * index)` — in IEEE double, as PHP computes them.
    """
    if event.effect in (RESET, PURCHASE):
        return calculative_index
    if event.calculation_type == FIXED:
        return int(event.value)
    if event.type == SPEND:
        return math.ceil(event.value * (calculative_index / 2.0))
    return math.ceil(event.value * calculative_index)


def apply(effect: str, amount: int, sub: int, purchased: int) -> tuple[int, int, int]:
    """Apply one ledger row to the pools as the application's bookkeeping does.

    Returns (previous_amount to record, subscription pool after, purchased pool after). The
    previous_amount is the subscription pool before, except for purchases, which record the
    purchased pool after the purchase (contract section 2).
    """
    if effect == RESET:
        return sub, amount, purchased
    if effect == EFFECT_ADD:
        return sub, sub + amount, purchased
    if effect == PURCHASE:
        return purchased + amount, sub, purchased + amount
    if sub >= amount:
        return sub, sub - amount, purchased
    if purchased >= amount:
        return sub, sub, purchased - amount
    return sub, 0, max(purchased - (amount - sub), 0)


@dataclass(frozen=True)
class Plan:
    """A Stripe product with its monthly and yearly price rows."""

    name: str
    slug: str
    monthly_credits: int
    yearly_full_credits: int  # per year; a month is a twelfth, truncated
    trial_credits: int
    month_price_cents: int
    year_price_cents: int
    tier: int


PLANS: tuple[Plan, ...] = (
    Plan("Basic", "basic", 500, 6000, 100, 2900, 29000, 1),
    Plan("Pro", "pro", 1500, 18100, 250, 7900, 79000, 2),
    Plan("Enterprise", "enterprise", 4000, 48500, 500, 19900, 199000, 3),
)

# One-time extra-credit packs: (credits, price in cents).
CREDIT_PACKS: tuple[tuple[int, int], ...] = ((100, 900), (500, 3900), (1000, 6900), (2500, 14900))
