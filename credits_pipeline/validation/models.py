"""Pandera models of the extracted tables: what a row must be for the warehouse to hold it.

Each model states, per column, the type the warehouse stores (ids and integers as nullable Int64,
credits prices as floats, timestamps, JSON text) and the domains the contract documents. The two
kinds of finding are treated differently on purpose (contract section 5): a value the warehouse
cannot represent — text in an integer column, malformed JSON, a NULL or duplicate primary key — is
quarantined; a value that is merely unusual for the business (an `event_type` of 3, a calculation
type nobody knows) loads, is counted here as a domain warning, and is judged by the ledger rules.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from credits_pipeline.validation.json_check import register_json_check

register_json_check()

# Values the contract documents; anything else loads and is reported, never quarantined.
DIRECTIONS = [1, 2]
CALCULATION_TYPES = ["fixed", "calculative"]
PLAN_TYPES = ["product", "month", "year", "one_time"]

_ID: dict[str, Any] = dict(nullable=False, unique=True)
Int = Series[pd.Int64Dtype]
Float = Series[pd.Float64Dtype]
Text = Series[pd.StringDtype]
Timestamp = Series[pa.DateTime]
Bool = Series[pd.BooleanDtype]


class _Base(pa.DataFrameModel):
    class Config:
        coerce = True
        strict = "filter"  # the reader selects by name; never carry an unlisted column


class CreditEventsModel(_Base):
    id: Int = pa.Field(**_ID)
    name: Text = pa.Field(nullable=True)
    type: Int = pa.Field(nullable=True, isin=DIRECTIONS)
    calculation_type: Text = pa.Field(nullable=True, isin=CALCULATION_TYPES)
    value: Float = pa.Field(nullable=True)
    min_amount: Float = pa.Field(nullable=True, ge=0)
    created_at: Timestamp = pa.Field(nullable=True)
    updated_at: Timestamp = pa.Field(nullable=True)


class UsersModel(_Base):
    id: Int = pa.Field(**_ID)
    plan_id: Int = pa.Field(nullable=True)
    subscription_provider: Int = pa.Field(nullable=True, isin=[1, 2, 3, 4])
    trial_ends_at: Timestamp = pa.Field(nullable=True)
    subscription_ends_at: Timestamp = pa.Field(nullable=True)
    remaining_credit_amount: Int = pa.Field(nullable=True, ge=0)
    monthly_credit_amount: Int = pa.Field(nullable=True)
    extra_credits: Int = pa.Field(nullable=True, ge=0)
    created_at: Timestamp = pa.Field(nullable=True)
    updated_at: Timestamp = pa.Field(nullable=True)


class CreditHistoriesModel(_Base):
    id: Int = pa.Field(**_ID)
    user_id: Int = pa.Field(nullable=True)
    credit_events_id: Int = pa.Field(nullable=True)
    creditable_type: Text = pa.Field(nullable=True)
    creditable_id: Int = pa.Field(nullable=True)
    description: Text = pa.Field(nullable=True)
    label: Text = pa.Field(nullable=True)
    calculative_index: Int = pa.Field(nullable=True, ge=0)
    event_value: Int = pa.Field(nullable=True, ge=0)
    amount: Int = pa.Field(nullable=True, ge=0)
    previous_amount: Int = pa.Field(nullable=True, ge=0)
    event_type: Int = pa.Field(nullable=True, isin=DIRECTIONS)
    meta: Text = pa.Field(nullable=True, valid_json=())
    created_at: Timestamp = pa.Field(nullable=True)
    updated_at: Timestamp = pa.Field(nullable=True)


class PlansModel(_Base):
    id: Int = pa.Field(**_ID)
    parent_id: Int = pa.Field(nullable=True)
    plan_id: Text = pa.Field(nullable=True)
    name: Text = pa.Field(nullable=True)
    type: Text = pa.Field(nullable=True, isin=PLAN_TYPES)
    price: Float = pa.Field(nullable=True, ge=0)
    currency: Text = pa.Field(nullable=True)
    slug: Text = pa.Field(nullable=True)
    active: Bool = pa.Field(nullable=True)
    meta: Text = pa.Field(nullable=True, valid_json=())
    created_at: Timestamp = pa.Field(nullable=True)
    updated_at: Timestamp = pa.Field(nullable=True)


class SubscriptionsModel(_Base):
    id: Int = pa.Field(**_ID)
    user_id: Int = pa.Field(nullable=True)
    type: Text = pa.Field(nullable=True)
    stripe_id: Text = pa.Field(nullable=True)
    stripe_status: Text = pa.Field(nullable=True)
    stripe_price: Text = pa.Field(nullable=True)
    quantity: Int = pa.Field(nullable=True)
    trial_ends_at: Timestamp = pa.Field(nullable=True)
    cycle_anchor_at: Timestamp = pa.Field(nullable=True)
    ends_at: Timestamp = pa.Field(nullable=True)
    created_at: Timestamp = pa.Field(nullable=True)
    updated_at: Timestamp = pa.Field(nullable=True)


class PurchasesModel(_Base):
    id: Int = pa.Field(**_ID)
    user_id: Int = pa.Field(nullable=True)
    plan_id: Int = pa.Field(nullable=True)
    payment_intent: Text = pa.Field(nullable=True)
    status: Text = pa.Field(nullable=True)
    created_at: Timestamp = pa.Field(nullable=True)
    updated_at: Timestamp = pa.Field(nullable=True)


class VideosModel(_Base):
    id: Int = pa.Field(**_ID)
    user_id: Int = pa.Field(nullable=True)
    title: Text = pa.Field(nullable=True)
    type: Text = pa.Field(nullable=True)
    provider: Text = pa.Field(nullable=True)
    status: Text = pa.Field(nullable=True)
    exports: Int = pa.Field(nullable=True, ge=0)
    retries: Int = pa.Field(nullable=True)
    created_at: Timestamp = pa.Field(nullable=True)
    updated_at: Timestamp = pa.Field(nullable=True)


class FacelessesModel(_Base):
    id: Int = pa.Field(**_ID)
    user_id: Int = pa.Field(nullable=True)
    type: Text = pa.Field(nullable=True)
    video_id: Int = pa.Field(nullable=True)
    estimated_duration: Int = pa.Field(nullable=True)
    genre_name: Text = pa.Field(nullable=True)
    created_at: Timestamp = pa.Field(nullable=True)
    updated_at: Timestamp = pa.Field(nullable=True)


class RealClonesModel(_Base):
    id: Int = pa.Field(**_ID)
    user_id: Int = pa.Field(nullable=True)
    provider: Text = pa.Field(nullable=True)
    status: Text = pa.Field(nullable=True)
    retries: Int = pa.Field(nullable=True, ge=0)
    created_at: Timestamp = pa.Field(nullable=True)
    updated_at: Timestamp = pa.Field(nullable=True)


class SpeechesModel(_Base):
    id: Int = pa.Field(**_ID)
    user_id: Int = pa.Field(nullable=True)
    real_clone_id: Int = pa.Field(nullable=True)
    provider: Text = pa.Field(nullable=True)
    status: Text = pa.Field(nullable=True)
    created_at: Timestamp = pa.Field(nullable=True)
    updated_at: Timestamp = pa.Field(nullable=True)


class CaptionsModel(_Base):
    id: Int = pa.Field(**_ID)
    user_id: Int = pa.Field(nullable=True)
    model_type: Text = pa.Field(nullable=True)
    model_id: Int = pa.Field(nullable=True)
    provider: Text = pa.Field(nullable=True)
    created_at: Timestamp = pa.Field(nullable=True)
    updated_at: Timestamp = pa.Field(nullable=True)


MODELS: dict[str, type[pa.DataFrameModel]] = {
    "credit_events": CreditEventsModel,
    "users": UsersModel,
    "credit_histories": CreditHistoriesModel,
    "plans": PlansModel,
    "subscriptions": SubscriptionsModel,
    "purchases": PurchasesModel,
    "videos": VideosModel,
    "facelesses": FacelessesModel,
    "real_clones": RealClonesModel,
    "speeches": SpeechesModel,
    "captions": CaptionsModel,
}

# Pandera checks whose failure means "the warehouse cannot hold this row": the row is quarantined.
# Every other failed check (isin, ge, ...) is a domain warning: the row loads and is counted.
QUARANTINE_CHECK_PREFIXES = (
    "coerce_dtype",
    "dtype",
    "not_nullable",
    "field_uniqueness",
    "valid_json",
)
