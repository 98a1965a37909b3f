"""The churn model's pure functions and the usage-risk checks' results, on small hand-made frames.

The leakage tests are the ones that matter most: a model evaluated on snapshots whose outcomes it
trained on looks better than it is, and nothing downstream would notice.
"""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from credits_pipeline import check_metadata as cm
from credits_pipeline.alerts.sensor import observe_check_event
from credits_pipeline.analytics import churn, signals
from credits_pipeline.analytics.assets import needs_retraining

DAY = pd.Timedelta(days=1)
START = pd.Timestamp("2025-01-01")


def _daily(rows: list[tuple]) -> pd.DataFrame:
    """(user_id, day offset, spent[, allocated, forfeited, refunded, closing])."""
    full = [(*r, *(0,) * (7 - len(r))) for r in rows]
    return pd.DataFrame(
        [(u, START + d * DAY, s, a, f, r, c) for u, d, s, a, f, r, c in full],
        columns=[
            "user_id",
            "balance_date",
            "credits_spent",
            "credits_allocated",
            "credits_forfeited",
            "credits_refunded",
            "closing_balance",
        ],
    )


PLANS = pd.DataFrame(
    [
        dict(id=1, parent_id=None, plan_id="prod_basic", name="Basic", type="product", meta=None),
        dict(
            id=2,
            parent_id=1,
            plan_id="price_basic_month",
            name="Basic",
            type="month",
            meta='{"full_credits": 500}',
        ),
        dict(id=3, parent_id=None, plan_id="prod_pro", name="Pro", type="product", meta=None),
        dict(
            id=4,
            parent_id=3,
            plan_id="price_pro_year",
            name="Pro",
            type="year",
            meta='{"full_credits": 18000}',
        ),
    ]
)


def _subscriptions(rows: list[tuple]) -> pd.DataFrame:
    """(id, user_id, status, price, created offset, ends offset or None)."""
    return pd.DataFrame(
        [
            dict(
                id=i,
                user_id=u,
                stripe_status=s,
                stripe_price=p,
                trial_ends_at=pd.NaT,
                created_at=START + c * DAY,
                ends_at=(START + e * DAY) if e is not None else pd.NaT,
            )
            for i, u, s, p, c, e in rows
        ]
    )


# -- the time split --------------------------------------------------------------------------------


def test_training_snapshots_and_their_labels_end_before_the_evaluation_starts():
    dates = churn.snapshot_dates(START, START + 400 * DAY)
    split = churn.split_snapshots(dates)
    assert split.train and split.evaluate
    horizon = pd.Timedelta(days=split.horizon_days)
    assert max(split.train) + horizon <= split.evaluation_start == min(split.evaluate)
    assert set(split.train).isdisjoint(split.evaluate)
    # every snapshot's own label window ends by the data's end
    assert max(split.evaluate) + horizon <= START + 400 * DAY


def test_a_leaky_split_is_refused():
    dates = churn.snapshot_dates(START, START + 400 * DAY)
    honest = churn.split_snapshots(dates)
    # training on every snapshot before the evaluation start, ignoring the label horizon
    leaky = churn.TimeSplit(
        tuple(d for d in dates if d < honest.evaluation_start),
        honest.evaluate,
        honest.evaluation_start,
    )
    with pytest.raises(churn.LeakageError, match="reaching into the evaluation period"):
        churn.assert_no_leakage(leaky)


def test_the_evaluated_model_learnt_only_from_snapshots_labelled_before_the_evaluation(
    monkeypatch,
):
    fitted: list[tuple[pd.DataFrame, churn.LogisticModel | None]] = []
    real_fit = churn.fit

    def recording_fit(train, *args, **kwargs):
        model = real_fit(train, *args, **kwargs)
        fitted.append((train, model))
        return model

    monkeypatch.setattr(churn, "fit", recording_fit)
    result = churn.train_and_evaluate(_population(users=60, seed=1))
    assert result.model is not None and result.train_examples and result.evaluation_examples
    # the frame the evaluated model (not the final refit, which may see everything) learnt from
    train = next(frame for frame, model in fitted if model is result.model)
    horizon = pd.Timedelta(days=churn.HORIZON_DAYS)
    assert len(train) == result.train_examples
    assert set(train["snapshot_at"]) <= set(result.split.train)
    assert train["snapshot_at"].max() + horizon <= result.split.evaluation_start


def _evaluation_period_rewritten(inputs: churn.Inputs, start: pd.Timestamp) -> churn.Inputs:
    """`inputs` with everything from `start` on changed: the outcomes are flipped (whoever
    cancelled from `start` on stays, and every third user who stayed cancels within the horizon)
    and the daily spending from `start` on is scrambled. Nothing before `start` changes, nor the
    history's first day or end, so an honest split trains on exactly the same examples."""
    subs = inputs.subscriptions.copy()
    late = subs["ends_at"] > start
    stayed = subs["ends_at"].isna() & (subs["user_id"] % 3 == 1)
    subs.loc[late, "ends_at"] = pd.NaT
    subs.loc[late, "stripe_status"] = "active"
    subs.loc[stayed, "ends_at"] = start + (1 + subs.loc[stayed, "user_id"] % 28) * DAY
    subs.loc[stayed, "stripe_status"] = "canceled"
    daily = inputs.daily.copy()
    later = daily["balance_date"] >= start
    rng = np.random.default_rng(7)
    daily.loc[later, "credits_spent"] = rng.permutation(
        daily.loc[later, "credits_spent"].to_numpy()
    ) * rng.integers(0, 5, later.sum())
    return churn.Inputs(daily, subs, inputs.plans, inputs.data_end, inputs.rule)


def test_rewriting_the_evaluation_period_leaves_the_evaluated_model_unchanged():
    """A model fitted on any held-out label or row would move when they change."""
    inputs = _population(users=60, seed=1)
    honest = churn.train_and_evaluate(inputs)
    rewritten = churn.train_and_evaluate(
        _evaluation_period_rewritten(inputs, honest.split.evaluation_start)
    )
    assert honest.model is not None
    # the rewrite reaches what is evaluated ...
    assert rewritten.split == honest.split
    assert rewritten.evaluation_positives != honest.evaluation_positives
    assert rewritten.model_eval.auc != honest.model_eval.auc
    # ... and not what was learnt: the same weights to the last bit
    assert rewritten.train_examples == honest.train_examples
    assert rewritten.model == honest.model
    # (the final refit, which does train on the evaluation period, moves)
    assert rewritten.final_model != honest.final_model


def test_features_at_a_snapshot_ignore_everything_from_its_day_on():
    subs = _subscriptions([(1, 1, "active", "price_basic_month", 0, None)])
    held = churn.subscriptions_at(subs, churn.plan_catalog(PLANS), START + 100 * DAY)
    before = _daily([(1, 90, 40), (1, 95, 60)])
    after = _daily([(1, 90, 40), (1, 95, 60), (1, 100, 5000), (1, 130, 7000)])
    at = START + 100 * DAY
    pd.testing.assert_frame_equal(
        churn.features_at(before, held, at), churn.features_at(after, held, at)
    )
    row = churn.features_at(before, held, at).iloc[0]
    assert row["log_spent_last_7_days"] == pytest.approx(np.log1p(60))
    assert row["days_since_last_spend"] == 5
    assert row["allocation_used_last_30_days"] == pytest.approx(100 / 500)


def test_the_label_is_a_cancellation_within_the_horizon_and_a_plan_change_is_not_one():
    subs = _subscriptions(
        [
            (1, 1, "canceled", "price_basic_month", 0, 40),  # upgraded on day 40 ...
            (2, 1, "canceled", "price_pro_year", 40, 90),  # ... and cancelled on day 90
            (3, 2, "canceled", "price_basic_month", 0, 200),
            (4, 3, "active", "price_basic_month", 0, None),
        ]
    )
    cancelled = churn.cancellations(subs)
    assert dict(cancelled) == {1: START + 90 * DAY, 2: START + 200 * DAY}
    users = pd.Series([1, 2, 3])
    assert list(churn.label(users, cancelled, START + 30 * DAY)) == [0, 0, 0]
    assert list(churn.label(users, cancelled, START + 70 * DAY)) == [1, 0, 0]
    held = churn.subscriptions_at(subs, churn.plan_catalog(PLANS), START + 50 * DAY)
    assert dict(zip(held["user_id"], held["plan_tier"], strict=False)) == {
        1: "Pro",
        2: "Basic",
        3: "Basic",
    }


def test_precision_at_the_top_counts_a_tie_at_the_boundary_by_its_average():
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    flag = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=float)
    # the top decile is 1 of 10; four users tie at the top, one of whom cancelled
    assert churn.precision_at_top(y, flag) == pytest.approx(0.25)
    assert churn.precision_at_top(y, np.arange(10, dtype=float)) == 1.0


def test_too_few_cancellations_or_a_chance_auc_is_reported_as_no_signal():
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.1).astype(int)
    noise = churn.evaluate(y, rng.random(400))
    assert not noise.has_signal and noise.verdict.startswith("no signal")
    few = churn.evaluate(np.array([1, 0, 0, 0, 1, 0]), np.array([0.9, 0.1, 0.2, 0.3, 0.8, 0.1]))
    assert not few.has_signal and "at least" in few.verdict
    strong = churn.evaluate(y, y + rng.random(400) * 0.5)
    assert strong.has_signal and strong.auc > 0.9


def _population(users: int, seed: int) -> churn.Inputs:
    """Monthly Basic subscribers over a year; a third cancel, spending less 3 weeks before."""
    rng = np.random.default_rng(seed)
    rows, subs = [], []
    for u in range(1, users + 1):
        start = int(rng.integers(0, 60))
        cancel = int(rng.integers(120, 360)) if u % 3 == 0 else None
        subs.append((u, u, "canceled" if cancel else "active", "price_basic_month", start, cancel))
        for d in range(start, cancel or 365):
            fading = cancel is not None and d >= cancel - 21
            if rng.random() < (0.1 if fading else 0.6):
                rows.append((u, d, int(rng.integers(5, 40))))
    return churn.Inputs(
        _daily(rows),
        _subscriptions(subs),
        PLANS,
        START + 365 * DAY,
        {"churn_inactive_days": 14, "churn_declining_ratio": 0.25},
    )


def test_the_model_finds_engagement_that_fades_before_a_cancellation():
    result = churn.train_and_evaluate(_population(users=150, seed=2))
    assert result.model_eval.has_signal, result.model_eval.verdict
    weights = dict(zip(result.final_model.features, result.final_model.weights, strict=False))
    assert weights["log_spent_last_7_days"] < 0 or weights["usage_trend_log_ratio"] < 0


def test_a_history_too_short_to_hold_a_period_out_says_so_and_scores_nobody():
    inputs = _population(users=30, seed=3)
    inputs.data_end = START + 100 * DAY  # 56 days of history, then too little for two labels
    result = churn.train_and_evaluate(inputs)
    assert result.model is None and not result.model_eval.has_signal
    assert result.model_eval.verdict.startswith("no signal measurable")
    scored = churn.score_today(inputs, result.final_model, inputs.data_end)
    assert len(scored) and scored["churn_probability"].isna().all()


def test_a_short_history_still_splits_in_time_without_leaking():
    dates = churn.snapshot_dates(START, START + 182 * DAY)  # six months, as small demos have
    split = churn.split_snapshots(dates)
    assert split.train and split.evaluate
    assert max(split.train) + pd.Timedelta(days=churn.HORIZON_DAYS) <= split.evaluation_start


def test_a_stored_model_is_reused_for_a_week_then_retrained():
    now = pd.Timestamp("2025-06-30")
    assert needs_retraining(None, now)
    assert not needs_retraining(now - 6 * DAY, now)
    assert needs_retraining(now - 7 * DAY, now)
    assert needs_retraining(now + DAY, now)  # trained on data newer than the warehouse holds


# -- usage-risk checks ----------------------------------------------------------------------------


def test_each_signal_gets_a_warn_check_with_the_count_and_worst_users_the_alerts_read():
    rows = [
        signals.FlaggedRow("refund_ratio", 7, 1.2, 0.5, 0.07, 300, "e", "1,2", None),
        signals.FlaggedRow("refund_ratio", 9, 2.5, 0.9, 0.07, 900, "e", "3", None),
        signals.FlaggedRow("shared_content_pattern", 4, 1.25, 5.0, None, 48, "e", "8", None),
    ]
    results = {r.check_name: r for r in signals.signal_check_results(rows)}
    assert set(results) == {f"usage_risk_{s}" for s in signals.SIGNALS}
    refund = results["usage_risk_refund_ratio"]
    assert not refund.passed and refund.severity == dg.AssetCheckSeverity.WARN
    assert refund.metadata[cm.VIOLATIONS].value == 2
    assert refund.metadata[cm.CREDITS_AT_STAKE].value == 1200
    assert refund.metadata[cm.WORST_USER_IDS].value == "9, 7"  # highest score first
    assert refund.metadata["high_score_users"].value == 1
    assert refund.metadata[cm.RULE].value == "refund_ratio"
    # what the alert sensor makes of it: the same numbers, not "n/a"
    evaluation = dg.AssetCheckEvaluation(
        asset_key=signals.USAGE_RISK_SIGNALS_KEY,
        check_name=refund.check_name,
        passed=refund.passed,
        metadata=refund.metadata,
        severity=refund.severity,
        description=refund.description,
    )
    entry = dg.EventLogEntry(
        error_info=None,
        level="INFO",
        user_message="",
        run_id="r1",
        timestamp=1_700_000_000.0,
        dagster_event=dg.DagsterEvent(
            event_type_value=dg.DagsterEventType.ASSET_CHECK_EVALUATION.value,
            job_name="credits_daily",
            event_specific_data=evaluation,
        ),
    )
    observed = observe_check_event(1, entry, "http://ui.test")
    assert observed is not None and observed.state.failing
    alert = observed.alert
    assert (alert.rule, alert.count, alert.credits_at_stake) == ("refund_ratio", 2, 1200)
    assert alert.severity == "WARN" and "| 9 |" in (alert.worst_users or "")
    assert results["usage_risk_spend_velocity_spike"].passed
