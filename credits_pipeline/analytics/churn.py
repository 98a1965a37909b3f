"""Churn risk learned from the ledger's own history, evaluated on a period training never saw.

The rule of thumb in `marts.user_credit_trends` (inactive, declining usage, subscription ending)
was never checked against what happened. Here every weekly snapshot date of the past becomes a
training example per active subscriber: features from what the warehouse knew on that date (usage
trend, balance utilisation, breakage, refunds, plan, tenure) and a label from what happened next (a
cancellation within `HORIZON_DAYS`). A logistic regression is trained on early snapshots and
evaluated on later ones whose labels start after every training label has ended, next to the rule
of thumb evaluated on the same snapshots. A logistic model is a handful of numbers (per-feature
mean, scale and weight, an intercept), so it is stored as a table and re-read to score, on DuckDB
and BigQuery alike.

Everything here is pure (pandas in, pandas out): the Dagster asset (`assets.py`) only reads the
inputs and writes the outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

HORIZON_DAYS = 30  # the label: a cancellation within this many days after the snapshot
SNAPSHOT_EVERY_DAYS = 7
EVALUATION_DAYS = 91  # the held-out period: the last 13 weekly snapshots with complete labels
MIN_HISTORY_DAYS = 56  # the first snapshot leaves this much history for the usage features
MIN_POSITIVES = 10  # fewer cancellations than this in a split: no figure can show a signal
TOP_FRACTION = 0.1  # precision at the top decile
Z_95 = 1.96
REGULARIZATION_C = 1.0
RANDOM_STATE = 0

# Ledger-derived features, in the order of the stored weights.
FEATURES: tuple[str, ...] = (
    "log_spent_last_7_days",
    "log_spent_last_30_days",
    "usage_trend_log_ratio",
    "days_since_last_spend",
    "active_days_last_30_days",
    "allocation_used_last_30_days",
    "balance_left_share",
    "breakage_share_90_days",
    "refund_share_90_days",
    "log_tenure_days",
    "is_trialing",
    "is_yearly",
    "tier_pro",
    "tier_enterprise",
)
FEATURE_DOCS = {
    "log_spent_last_7_days": "log(1 + credits spent in the 7 days before)",
    "log_spent_last_30_days": "log(1 + credits spent in the 30 days before)",
    "usage_trend_log_ratio": "log of the 14 days' daily spend (+1) over the 56 days' (+1)",
    "days_since_last_spend": "days since the last day with a spend (90 when none in 90 days)",
    "active_days_last_30_days": "days with a spend in the 30 days before",
    "allocation_used_last_30_days": "credits spent in 30 days / the plan's monthly credits (<= 3)",
    "balance_left_share": "both pools at the snapshot / the plan's monthly credits (<= 5)",
    "breakage_share_90_days": "credits forfeited at resets / credits allocated, 90 days",
    "refund_share_90_days": "credits refunded / credits spent, 90 days",
    "log_tenure_days": "log(1 + days since the first subscription started)",
    "is_trialing": "1 while the trial runs",
    "is_yearly": "1 on a yearly price",
    "tier_pro": "1 on a Pro plan (Basic is the reference)",
    "tier_enterprise": "1 on an Enterprise plan",
}
TIER_FEATURES = {"Pro": "tier_pro", "Enterprise": "tier_enterprise"}


NO_HISTORY_VERDICT = (
    f"no signal measurable: the history holds no snapshot to train on before a held-out period "
    f"({MIN_HISTORY_DAYS} days of history, then training and held-out snapshots, each followed "
    f"by a {HORIZON_DAYS}-day label, are needed)"
)


NO_BOTH_OUTCOMES_VERDICT = (
    "no signal measurable: the training snapshots hold no cancellation (or only cancellations)"
)


class LeakageError(ValueError):
    """Training saw a label that reaches into the evaluation period."""


# -- inputs ---------------------------------------------------------------------------------------


def plan_catalog(plans: pd.DataFrame) -> pd.DataFrame:
    """Price rows with their tier (the product's name), interval and monthly credits.

    `plans` has the raw columns id, parent_id, plan_id, name, type, meta (JSON text).
    """
    import json

    products = plans.loc[plans["type"] == "product", ["id", "name"]].rename(
        columns={"id": "parent_id", "name": "plan_tier"}
    )
    prices = plans.loc[plans["type"].isin(["month", "year"])].merge(
        products, on="parent_id", how="left"
    )

    def monthly_credits(row) -> float:
        try:
            full = float(json.loads(row["meta"] or "{}").get("full_credits") or 0)
        except (TypeError, ValueError, AttributeError):
            full = 0.0
        return full / 12 if row["type"] == "year" else full

    prices["monthly_credits"] = prices.apply(monthly_credits, axis=1) if len(prices) else []
    prices["plan_tier"] = prices["plan_tier"].fillna(prices["name"])
    return prices.rename(columns={"plan_id": "stripe_price", "type": "billing_interval"})[
        ["stripe_price", "plan_tier", "billing_interval", "monthly_credits"]
    ]


def cancellations(subscriptions: pd.DataFrame) -> pd.Series:
    """When each user cancelled: `ends_at` of the user's latest subscription when it is canceled.

    An earlier row that ended is a plan change (the next subscription starts as it ends), not a
    cancellation.
    """
    latest = subscriptions.sort_values(["user_id", "created_at", "id"]).groupby("user_id").tail(1)
    cancelled = latest[(latest["stripe_status"] == "canceled") & latest["ends_at"].notna()]
    return cancelled.set_index("user_id")["ends_at"]


def subscriptions_at(
    subscriptions: pd.DataFrame, catalog: pd.DataFrame, at: pd.Timestamp
) -> pd.DataFrame:
    """The subscription each user held at `at` (point in time), with its plan; one row per user."""
    held = subscriptions[
        (subscriptions["created_at"] <= at)
        & (subscriptions["ends_at"].isna() | (subscriptions["ends_at"] > at))
    ]
    held = held.sort_values(["user_id", "created_at", "id"]).groupby("user_id").tail(1)
    first = subscriptions.groupby("user_id")["created_at"].min().rename("first_subscribed_at")
    return held.merge(catalog, on="stripe_price", how="left").merge(
        first, left_on="user_id", right_index=True, how="left"
    )


# -- features and labels --------------------------------------------------------------------------


def _window_sums(daily: pd.DataFrame, at: pd.Timestamp, days: int, column: str) -> pd.Series:
    start = (at - pd.Timedelta(days=days)).normalize()
    rows = daily[(daily["balance_date"] >= start) & (daily["balance_date"] < at)]
    return rows.groupby("user_id")[column].sum()


def features_at(daily: pd.DataFrame, held: pd.DataFrame, at: pd.Timestamp) -> pd.DataFrame:
    """One row per user in `held` (the subscriptions active at `at`) with FEATURES, from the
    daily ledger strictly before `at`'s day boundary (nothing the snapshot could not know)."""
    at = pd.Timestamp(at)
    day = at.normalize()
    past = daily[daily["balance_date"] < day]
    out = (
        held[
            [
                "user_id",
                "plan_tier",
                "billing_interval",
                "monthly_credits",
                "trial_ends_at",
                "first_subscribed_at",
            ]
        ]
        .copy()
        .set_index("user_id")
    )
    s7 = _window_sums(past, day, 7, "credits_spent")
    s14 = _window_sums(past, day, 14, "credits_spent")
    s30 = _window_sums(past, day, 30, "credits_spent")
    s56 = _window_sums(past, day, 56, "credits_spent")
    s90 = _window_sums(past, day, 90, "credits_spent")
    spend_days = past[
        (past["credits_spent"] > 0) & (past["balance_date"] >= day - pd.Timedelta(days=90))
    ]
    last_spend = spend_days.groupby("user_id")["balance_date"].max()
    active30 = (
        spend_days[spend_days["balance_date"] >= day - pd.Timedelta(days=30)]
        .groupby("user_id")
        .size()
    )
    forfeited = _window_sums(past, day, 90, "credits_forfeited")
    allocated = _window_sums(past, day, 90, "credits_allocated")
    refunded = _window_sums(past, day, 90, "credits_refunded")
    # each user's closing balance on their latest day (one row per user and day): the row of the
    # latest date, found without sorting a copy of the whole history
    latest_rows = past.groupby("user_id")["balance_date"].idxmax()
    balance = past.loc[latest_rows.to_numpy(), ["user_id", "closing_balance"]].set_index("user_id")[
        "closing_balance"
    ]

    def col(series: pd.Series) -> pd.Series:
        return series.reindex(out.index).fillna(0).astype(float)

    monthly = out["monthly_credits"].astype(float).where(out["monthly_credits"] > 0)
    out["log_spent_last_7_days"] = np.log1p(col(s7))
    out["log_spent_last_30_days"] = np.log1p(col(s30))
    out["usage_trend_log_ratio"] = np.log((col(s14) / 14 + 1) / (col(s56) / 56 + 1))
    days_since = (day - last_spend.reindex(out.index)).dt.days
    out["days_since_last_spend"] = days_since.fillna(90).clip(upper=90).astype(float)
    out["active_days_last_30_days"] = col(active30)
    out["allocation_used_last_30_days"] = (col(s30) / monthly).fillna(0).clip(upper=3)
    out["balance_left_share"] = (col(balance) / monthly).fillna(0).clip(lower=0, upper=5)
    out["breakage_share_90_days"] = (
        col(forfeited) / col(allocated).where(col(allocated) > 0)
    ).fillna(0)
    out["refund_share_90_days"] = (
        (col(refunded) / col(s90).where(col(s90) > 0)).fillna(0).clip(upper=3)
    )
    tenure = (at - out["first_subscribed_at"]).dt.total_seconds() / 86400
    out["log_tenure_days"] = np.log1p(tenure.fillna(0).clip(lower=0))
    out["is_trialing"] = (out["trial_ends_at"].notna() & (out["trial_ends_at"] > at)).astype(float)
    out["is_yearly"] = (out["billing_interval"] == "year").astype(float)
    for tier, name in TIER_FEATURES.items():
        out[name] = (out["plan_tier"] == tier).astype(float)
    return out.reset_index()


def rule_of_thumb_at(
    daily: pd.DataFrame, users: pd.Index, at: pd.Timestamp, rule: dict
) -> pd.Series:
    """The `user_credit_trends` churn-risk rule as it would have fired at `at` (1.0 = at risk).

    `inactive` (no ledger row for `churn_inactive_days`; a user whose rows start within that
    window is exempt, as a signup within it is) and `declining_usage`. `subscription_ending` is
    left out: `ends_at` is written when the cancellation happens, so on a past date it would be
    the label itself.
    """
    day = pd.Timestamp(at).normalize()
    past = daily[daily["balance_date"] < day]
    inactive_days = int(rule["churn_inactive_days"])
    ratio = float(rule["churn_declining_ratio"])
    last_row = past.groupby("user_id")["balance_date"].max().reindex(users)
    first_row = past.groupby("user_id")["balance_date"].min().reindex(users)
    s7 = _window_sums(past, day, 7, "credits_spent").reindex(users).fillna(0)
    s30 = _window_sums(past, day, 30, "credits_spent").reindex(users).fillna(0)
    boundary = day - pd.Timedelta(days=inactive_days)
    inactive = (last_row.isna() | (last_row < boundary)) & ~(first_row >= boundary)
    declining = (s30 > 0) & (s7 / 7 < ratio * s30 / 30)
    return (inactive | declining).astype(float)


def label(
    users: pd.Series, cancelled_at: pd.Series, at: pd.Timestamp, horizon_days: int = HORIZON_DAYS
) -> np.ndarray:
    """1 when the user cancels within `horizon_days` after `at`, else 0."""
    when = users.map(cancelled_at)
    end = at + pd.Timedelta(days=horizon_days)
    return ((when > at) & (when <= end)).fillna(False).astype(int).to_numpy()


# -- the time split -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeSplit:
    """Snapshot dates for training and for evaluation, and where the evaluation starts."""

    train: tuple[pd.Timestamp, ...]
    evaluate: tuple[pd.Timestamp, ...]
    evaluation_start: pd.Timestamp
    horizon_days: int = HORIZON_DAYS


def snapshot_dates(
    first_day: pd.Timestamp, data_end: pd.Timestamp, horizon_days: int = HORIZON_DAYS
) -> list[pd.Timestamp]:
    """Weekly snapshot dates (midnights) whose label horizon ends by `data_end`, counted back
    from the latest one, leaving MIN_HISTORY_DAYS of history before the first."""
    last = (data_end - pd.Timedelta(days=horizon_days)).normalize()
    first = (first_day + pd.Timedelta(days=MIN_HISTORY_DAYS)).normalize()
    dates = []
    at = last
    while at >= first:
        dates.append(at)
        at -= pd.Timedelta(days=SNAPSHOT_EVERY_DAYS)
    return sorted(dates)


def split_snapshots(
    dates: list[pd.Timestamp],
    evaluation_days: int = EVALUATION_DAYS,
    horizon_days: int = HORIZON_DAYS,
) -> TimeSplit:
    """The last `evaluation_days` of snapshots are held out; training keeps only snapshots whose
    label window (snapshot + horizon) ends at or before the first held-out snapshot. A history
    too short for that holds out its second half after the horizon (half for training, half for
    evaluation) instead."""
    if not dates:
        return TimeSplit((), (), pd.Timestamp.max, horizon_days)
    usable = (dates[-1] - dates[0]).days - horizon_days
    evaluation_days = max(min(evaluation_days, usable // 2), SNAPSHOT_EVERY_DAYS)
    evaluation_start = dates[-1] - pd.Timedelta(days=evaluation_days - 1)
    evaluate = tuple(d for d in dates if d >= evaluation_start)
    if evaluate:
        evaluation_start = evaluate[0]
    horizon = pd.Timedelta(days=horizon_days)
    train = tuple(d for d in dates if d + horizon <= evaluation_start)
    split = TimeSplit(train, evaluate, evaluation_start, horizon_days)
    assert_no_leakage(split)
    return split


def assert_no_leakage(split: TimeSplit) -> None:
    """Fail when any training snapshot's label window reaches the evaluation period."""
    horizon = pd.Timedelta(days=split.horizon_days)
    late = [d for d in split.train if d + horizon > split.evaluation_start]
    if late:
        raise LeakageError(
            f"{len(late)} training snapshot(s) have labels reaching into the evaluation period "
            f"(from {split.evaluation_start:%Y-%m-%d}): first {late[0]:%Y-%m-%d} "
            f"+ {split.horizon_days} days"
        )


# -- examples, training, metrics ------------------------------------------------------------------


@dataclass
class Inputs:
    """What the model reads from the warehouse, as DataFrames (see assets.py for the queries)."""

    daily: (
        pd.DataFrame
    )  # user_id, balance_date, credits_spent/allocated/forfeited/refunded, closing_balance
    subscriptions: pd.DataFrame  # raw.subscriptions
    plans: pd.DataFrame  # raw.plans
    data_end: pd.Timestamp  # the cut-off, or the source's newest row when the source is stale
    rule: dict = field(default_factory=dict)  # the dbt vars of the rule of thumb


def examples(inputs: Inputs, dates: tuple[pd.Timestamp, ...]) -> pd.DataFrame:
    """Features, rule-of-thumb flag and label for every active subscriber at every date."""
    catalog = plan_catalog(inputs.plans)
    cancelled = cancellations(inputs.subscriptions)
    frames = []
    for at in dates:
        held = subscriptions_at(inputs.subscriptions, catalog, at)
        if held.empty:
            continue
        frame = features_at(inputs.daily, held, at)
        frame["snapshot_at"] = at
        frame["label"] = label(frame["user_id"], cancelled, at)
        frame["rule_of_thumb"] = rule_of_thumb_at(
            inputs.daily, pd.Index(frame["user_id"]), at, inputs.rule
        ).to_numpy()
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["user_id", "snapshot_at", "label", "rule_of_thumb", *FEATURES])
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class LogisticModel:
    """A fitted logistic regression on standardized features: all a score needs."""

    features: tuple[str, ...]
    means: tuple[float, ...]
    scales: tuple[float, ...]
    weights: tuple[float, ...]
    intercept: float

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        x = frame[list(self.features)].to_numpy(dtype=float)
        z = (x - np.array(self.means)) / np.array(self.scales)
        return 1.0 / (1.0 + np.exp(-(z @ np.array(self.weights) + self.intercept)))

    def weight_table(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "feature": self.features,
                "mean": self.means,
                "scale": self.scales,
                "weight": self.weights,
            }
        )


def fit(train: pd.DataFrame, features: tuple[str, ...] = FEATURES) -> LogisticModel | None:
    """Standardize, then an L2 logistic regression (scikit-learn). Classes are not re-weighted:
    the output must stay a probability (re-weighting would inflate it; the ranking, which AUC and
    precision measure, barely moves). Without examples of both outcomes there is nothing to
    learn: no model (scores are then NULL, not a made-up constant)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if train.empty or train["label"].nunique() < 2:
        return None
    x = train[list(features)].to_numpy(dtype=float)
    y = train["label"].to_numpy(dtype=int)
    scaler = StandardScaler().fit(x)
    scales = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    model = LogisticRegression(C=REGULARIZATION_C, max_iter=2000, random_state=RANDOM_STATE)
    model.fit((x - scaler.mean_) / scales, y)
    return LogisticModel(
        tuple(features),
        tuple(float(m) for m in scaler.mean_),
        tuple(float(s) for s in scales),
        tuple(float(w) for w in model.coef_[0]),
        float(model.intercept_[0]),
    )


def precision_at_top(
    y: np.ndarray, score: np.ndarray, fraction: float = TOP_FRACTION
) -> float | None:
    """Share of cancellations among the top `fraction` by score; tied scores at the boundary count
    by their average (so a yes/no rule is not credited with a lucky order)."""
    n = len(y)
    if n == 0:
        return None
    k = max(1, math.ceil(n * fraction))
    order = np.argsort(-score, kind="stable")
    threshold = score[order[k - 1]]
    above = score > threshold
    tied = score == threshold
    taken_tied = k - int(above.sum())
    positives = float(y[above].sum()) + taken_tied * float(y[tied].mean())
    return positives / k


def auc(y: np.ndarray, score: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, score))


def auc_standard_error(value: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil's standard error of an AUC."""
    q1 = value / (2 - value)
    q2 = 2 * value * value / (1 + value)
    var = (
        value * (1 - value) + (positives - 1) * (q1 - value**2) + (negatives - 1) * (q2 - value**2)
    ) / max(positives * negatives, 1)
    return math.sqrt(max(var, 0.0))


@dataclass
class Evaluation:
    """Held-out figures of one scorer."""

    auc: float | None
    auc_low: float | None
    precision_at_top_decile: float | None
    has_signal: bool
    verdict: str


def evaluate(y: np.ndarray, score: np.ndarray) -> Evaluation:
    """AUC (with a 95% interval), precision at the top decile, and whether that is a signal: the
    interval must exclude 0.5 and there must be MIN_POSITIVES cancellations to judge by."""
    positives = int(y.sum())
    negatives = len(y) - positives
    value = auc(y, score)
    precision = precision_at_top(y, score)
    if value is None or positives < MIN_POSITIVES:
        return Evaluation(
            value,
            None,
            precision,
            False,
            f"no signal measurable: {positives} cancellations among {len(y)} "
            f"held-out examples (at least {MIN_POSITIVES} needed)",
        )
    low = value - Z_95 * auc_standard_error(value, positives, negatives)
    if low <= 0.5:
        return Evaluation(
            value,
            low,
            precision,
            False,
            f"no signal: AUC {value:.3f} is not distinguishable from chance "
            f"(95% lower bound {low:.3f})",
        )
    return Evaluation(
        value, low, precision, True, f"signal: AUC {value:.3f} (95% lower bound {low:.3f})"
    )


@dataclass
class TrainingResult:
    """The evaluated model, the rule of thumb on the same held-out snapshots, and the final model
    refitted on every snapshot with a complete label (what scores today)."""

    split: TimeSplit
    model: LogisticModel | None
    final_model: LogisticModel | None
    model_eval: Evaluation
    rule_eval: Evaluation
    train_examples: int
    evaluation_examples: int
    evaluation_positives: int
    base_rate: float | None


def train_and_evaluate(inputs: Inputs) -> TrainingResult:
    """Build snapshots, split them in time, fit on the early part, evaluate on the later part,
    then refit on all snapshots for scoring."""
    first_day = inputs.daily["balance_date"].min() if len(inputs.daily) else inputs.data_end
    dates = snapshot_dates(pd.Timestamp(first_day), inputs.data_end)
    split = split_snapshots(dates)
    train = examples(inputs, split.train)
    held_out = examples(inputs, split.evaluate)
    model = fit(train)
    y = held_out["label"].to_numpy(dtype=int)
    if model is None:
        verdict = NO_HISTORY_VERDICT if train.empty else NO_BOTH_OUTCOMES_VERDICT
        model_eval = Evaluation(None, None, None, False, verdict)
    else:
        model_eval = evaluate(y, model.predict(held_out) if len(held_out) else np.array([]))
    rule_eval = evaluate(y, held_out["rule_of_thumb"].to_numpy(dtype=float))
    # scoring needs a model whose worth was measured: none when training had nothing to learn
    final_model = fit(pd.concat([train, held_out], ignore_index=True)) if model else None
    return TrainingResult(
        split=split,
        model=model,
        final_model=final_model,
        model_eval=model_eval,
        rule_eval=rule_eval,
        train_examples=len(train),
        evaluation_examples=len(held_out),
        evaluation_positives=int(y.sum()),
        base_rate=float(y.mean()) if len(y) else None,
    )


def score_today(inputs: Inputs, model: LogisticModel | None, at: pd.Timestamp) -> pd.DataFrame:
    """Every subscriber active at `at` with the probability of cancelling within HORIZON_DAYS and
    their risk decile (1 = the tenth most at risk); both NULL without a model."""
    held = subscriptions_at(inputs.subscriptions, plan_catalog(inputs.plans), at)
    frame = features_at(inputs.daily, held, at)
    if model is None or frame.empty:
        frame["churn_probability"] = np.nan
        frame["risk_decile"] = pd.array([pd.NA] * len(frame), dtype="Int64")
        return frame
    frame["churn_probability"] = model.predict(frame)
    ranks = frame["churn_probability"].rank(method="first", ascending=False)
    frame["risk_decile"] = (np.ceil(ranks / len(frame) * 10)).clip(1, 10).astype("Int64")
    return frame
