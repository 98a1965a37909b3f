"""The event catalog the application ships (contract section 1), as the pipeline reads it.

The source's `credit_events` table gives each event its direction and pricing inputs, but not what
the event does to the two credit pools (`effect`) nor which product it belongs to (`service`): those
come from this table, joined by event `name` because ids depend on seeding order. The dbt project
carries the same table as a seed (`dbt_transform/seeds/event_catalog.csv`); a test keeps the two
equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Effect = Literal["reset", "add", "purchase", "spend"]


@dataclass(frozen=True)
class CatalogEvent:
    name: str
    type: int
    calculation_type: str
    value: float
    min_amount: float | None
    effect: Effect
    service: str


CATALOG: tuple[CatalogEvent, ...] = (
    CatalogEvent("subscription_amount_paid", 1, "calculative", 20, None, "reset", "allocation"),
    CatalogEvent("subscribe_to_trial", 1, "fixed", 500, None, "reset", "allocation"),
    CatalogEvent("prorated_credits", 1, "fixed", 0, None, "reset", "allocation"),
    CatalogEvent("monthly_credits_added", 1, "calculative", 1, None, "add", "allocation"),
    CatalogEvent("admin_credit_added", 1, "calculative", 1, None, "add", "bonus"),
    CatalogEvent("custom_credit_purchased", 1, "fixed", 0, None, "purchase", "purchase"),
    CatalogEvent("refunded_credits", 1, "fixed", 0, None, "add", "refund"),
    CatalogEvent("faceless_video_generated", 2, "calculative", 2, 13, "spend", "faceless_video"),
    CatalogEvent("faceless_video_exported", 2, "calculative", 2, 3, "spend", "faceless_video"),
    CatalogEvent("image_animated", 2, "fixed", 10, 10, "spend", "faceless_video"),
    CatalogEvent("bulk_ai_images_generated", 2, "calculative", 2, 3, "spend", "faceless_video"),
    CatalogEvent("real_clone_generated", 2, "calculative", 2, 50, "spend", "real_clone"),
    CatalogEvent("real_clone_and_text_to_speech", 2, "calculative", 2, 57, "spend", "real_clone"),
    CatalogEvent("text_to_speech_generated", 2, "calculative", 2, 7, "spend", "voice_synthesis"),
    CatalogEvent("audio_transcription", 2, "calculative", 2, 1, "spend", "captions"),
    CatalogEvent("video_generated", 2, "calculative", 2, 6, "spend", "video_render"),
    CatalogEvent("ai_image_generated", 2, "fixed", 1, 1, "spend", "assets"),
    CatalogEvent("content_prompt_requested", 2, "calculative", 0.01, 1, "spend", "ai_writing"),
    CatalogEvent("idea_discovered", 2, "fixed", 15, 15, "spend", "ideas"),
    CatalogEvent("custom_character_purchased", 2, "fixed", 50, 50, "spend", "assets"),
)
CATALOG_BY_NAME: dict[str, CatalogEvent] = {e.name: e for e in CATALOG}

# Event names the rules single out.
REFUND_EVENT = "refunded_credits"
PURCHASE_EVENT = "custom_credit_purchased"
MONTHLY_RELEASE_EVENT = "monthly_credits_added"
