"""Dagster wiring of the analytics: the churn model's asset and the usage-risk checks.

Thin on purpose: queries in, the pure functions of `churn.py` / `signals.py`, tables and metadata
out. The churn model retrains when its stored model is older than RETRAIN_EVERY (a week of
cut-offs), or missing, or built on other features; in between, the daily run only scores with the
stored model. Why weekly: the label is a month long, so a week adds about a quarter of a horizon of
new outcomes — retraining daily would change the weights by noise while costing a full rebuild of
every snapshot; scoring daily keeps the probabilities current with the day's usage.
"""

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa

from credits_pipeline import settings
from credits_pipeline.analytics import churn, signals
from credits_pipeline.dbt_vars import project_vars
from credits_pipeline.names import (
    CUTOFF_TABLE,
    GROUP_MARTS,
    MARTS_PREFIX,
    OWNER_DATA_ENGINEERING,
    marts_key,
    raw_key,
)
from credits_pipeline.warehouse import session
from credits_pipeline.warehouse.interface import WarehouseParam
from credits_pipeline.warehouse.raw_tables import CUTOFF_RELATION

CHURN_RISK_KEY = marts_key("churn_risk")
CHURN_MODEL_KEY = marts_key("churn_model")
CHURN_RISK_TABLE = CHURN_RISK_KEY.path[-1]
CHURN_MODEL_TABLE = CHURN_MODEL_KEY.path[-1]
RETRAIN_EVERY = dt.timedelta(days=7)
CHURN_UPSTREAM = (
    marts_key("user_credit_daily"),
    marts_key("user_credit_trends"),
    raw_key("subscriptions"),
    raw_key("plans"),
    raw_key(CUTOFF_TABLE),
)
RULE_VARS = ("churn_inactive_days", "churn_declining_ratio", "churn_subscription_ending_days")

# Metadata keys of the churn assets.
MODEL_AUC_KEY = "held_out_auc_model"
RULE_AUC_KEY = "held_out_auc_rule_of_thumb"
MODEL_PRECISION_KEY = "held_out_precision_top_decile_model"
RULE_PRECISION_KEY = "held_out_precision_top_decile_rule_of_thumb"
BASE_RATE_KEY = "held_out_cancellation_rate"
VERDICT_KEY = "verdict"
WEIGHTS_KEY = "feature_weights"
RETRAINED_KEY = "retrained"

DAILY_SQL = f"""
select user_id, cast(balance_date as timestamp) as balance_date, credits_spent, credits_allocated,
    credits_forfeited, credits_refunded, closing_balance
from {MARTS_PREFIX}.user_credit_daily
"""
SUBSCRIPTIONS_SQL = """
select id, user_id, stripe_status, stripe_price, trial_ends_at, ends_at, created_at
from raw.subscriptions
"""
PLANS_SQL = (
    "select id, parent_id, plan_id, name, type, cast(meta as varchar) as meta from raw.plans"
)
CUTOFF_SQL = f"select max(cutoff_at) from {CUTOFF_RELATION}"
# The newest ledger row up to the cut-off, as marts.user_credit_trends computed it (one value on
# every row): the churn scores and the trends call the same source stale because they read one
# number, not two queries that must agree.
FRESHNESS_SQL = f"select max(source_fresh_as_of) from {MARTS_PREFIX}.user_credit_trends"
RULE_FLAGS_SQL = f"select user_id, churn_risk from {MARTS_PREFIX}.user_credit_trends"
STORED_MODEL_SQL = f"select * from {MARTS_PREFIX}.{CHURN_MODEL_TABLE} order by position"


def dbt_vars() -> dict:
    """The rule of thumb's dbt vars, which the churn model shares with the marts, read from
    dbt_project.yml (spelled once, there)."""
    variables = project_vars()
    return {name: variables[name] for name in RULE_VARS}


def stale_after() -> dt.timedelta:
    """When the source counts as stale: the setting the staleness check and (as a dbt var, see
    `dbt_vars.py`) `marts.user_credit_trends` read too, so all three agree."""
    return settings.source_stale_after()


def _timestamp(value) -> pd.Timestamp | None:
    if value is None or pd.isna(value):
        return None
    stamp = pd.Timestamp(value)
    return stamp.tz_convert(None) if stamp.tzinfo is not None else stamp


def _naive(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    for column in columns:
        values = pd.to_datetime(frame[column], utc=True)
        frame[column] = values.dt.tz_convert(None)
    return frame


def read_inputs(con) -> tuple[churn.Inputs, pd.Timestamp, pd.Timestamp | None]:
    """The model's inputs, the cut-off, and the source's newest ledger row up to it."""
    cutoff = _timestamp(con.execute(CUTOFF_SQL).fetchone()[0])
    if cutoff is None:
        raise RuntimeError(f"{CUTOFF_RELATION} holds no cutoff_at: run the extraction first")
    fresh = _timestamp(con.execute(FRESHNESS_SQL).fetchone()[0])
    # through Arrow: `fetchdf` held about twice the frame again while converting (at 100,000 users
    # a 211 MB frame peaked at 880 MB more; through Arrow, 490 MB)
    daily = _naive(con.execute(DAILY_SQL).fetch_arrow_table().to_pandas(), ("balance_date",))
    subscriptions = _naive(
        con.execute(SUBSCRIPTIONS_SQL).fetchdf(), ("trial_ends_at", "ends_at", "created_at")
    )
    plans = con.execute(PLANS_SQL).fetchdf()
    stale = fresh is None or cutoff - fresh > stale_after()
    data_end = fresh if (stale and fresh is not None) else cutoff
    inputs = churn.Inputs(daily, subscriptions, plans, data_end, dbt_vars())
    return inputs, cutoff, fresh


def model_card(result: churn.TrainingResult, trained_at: pd.Timestamp) -> dict:
    """What the training says about itself: when, on how much, and the held-out figures."""
    me, re_ = result.model_eval, result.rule_eval
    return {
        "trained_at": trained_at.to_pydatetime(),
        "evaluation_start": result.split.evaluation_start.to_pydatetime(),
        "train_examples": result.train_examples,
        "evaluation_examples": result.evaluation_examples,
        "evaluation_cancellations": result.evaluation_positives,
        "model_auc": me.auc,
        "model_precision_top_decile": me.precision_at_top_decile,
        "model_verdict": me.verdict,
        "rule_auc": re_.auc,
        "rule_precision_top_decile": re_.precision_at_top_decile,
        "rule_verdict": re_.verdict,
    }


CARD_TYPES = {
    "trained_at": pa.timestamp("us"),
    "evaluation_start": pa.timestamp("us"),
    "train_examples": pa.int64(),
    "evaluation_examples": pa.int64(),
    "evaluation_cancellations": pa.int64(),
    "model_auc": pa.float64(),
    "model_precision_top_decile": pa.float64(),
    "model_verdict": pa.string(),
    "rule_auc": pa.float64(),
    "rule_precision_top_decile": pa.float64(),
    "rule_verdict": pa.string(),
}


def model_to_table(model: churn.LogisticModel | None, card: dict) -> pa.Table:
    """The final model, one row per feature, each with the card of its training (no rows when
    the history allowed no model)."""
    features = model.features if model is not None else ()
    n = len(features)
    columns = {
        "position": pa.array(range(1, n + 1), pa.int64()),
        "feature": pa.array(features, pa.string()),
        "feature_mean": pa.array(model.means if model is not None else [], pa.float64()),
        "feature_scale": pa.array(model.scales if model is not None else [], pa.float64()),
        "weight": pa.array(model.weights if model is not None else [], pa.float64()),
        "intercept": pa.array([model.intercept] * n if model is not None else [], pa.float64()),
    }
    for name, kind in CARD_TYPES.items():
        columns[name] = pa.array([card[name]] * n, kind)
    return pa.table(columns)


def model_from_rows(frame: pd.DataFrame) -> tuple[churn.LogisticModel, pd.Timestamp, dict] | None:
    """The stored model, when there is one built on today's features."""
    if frame.empty or tuple(frame["feature"]) != churn.FEATURES:
        return None
    model = churn.LogisticModel(
        tuple(frame["feature"]),
        tuple(frame["feature_mean"]),
        tuple(frame["feature_scale"]),
        tuple(frame["weight"]),
        float(frame["intercept"].iloc[0]),
    )
    first = frame.iloc[0]
    return model, _timestamp(first["trained_at"]), first.to_dict()


def needs_retraining(trained_at: pd.Timestamp | None, data_end: pd.Timestamp) -> bool:
    """No stored model, one from a week of cut-offs ago or more, or one trained on newer data
    than there is now (the warehouse was rebuilt from an older source)."""
    return trained_at is None or data_end - trained_at >= RETRAIN_EVERY or trained_at > data_end


def _read_stored_model(con):
    try:
        return model_from_rows(con.execute(STORED_MODEL_SQL).fetchdf())
    except Exception:  # no table yet (first run), or one from an older layout
        return None


def scores_to_table(
    scored: pd.DataFrame,
    rule_flags: dict,
    scored_at: pd.Timestamp,
    fresh: pd.Timestamp | None,
    stale: bool,
    trained_at: pd.Timestamp,
) -> pa.Table:
    n = len(scored)
    return pa.table(
        {
            "user_id": pa.array(scored["user_id"].astype("int64"), pa.int64()),
            "plan_tier": pa.array(
                scored["plan_tier"].astype(object).where(scored["plan_tier"].notna(), None),
                pa.string(),
            ),
            "billing_interval": pa.array(
                scored["billing_interval"]
                .astype(object)
                .where(scored["billing_interval"].notna(), None),
                pa.string(),
            ),
            "churn_probability": pa.array(
                scored["churn_probability"].astype(float), pa.float64(), from_pandas=True
            ),
            "risk_decile": pa.array(scored["risk_decile"].astype("Int64"), pa.int64()),
            "rule_of_thumb_churn_risk": pa.array(
                [rule_flags.get(int(u)) for u in scored["user_id"]], pa.bool_()
            ),
            "credits_spent_last_30_days": pa.array(
                np.rint(np.expm1(scored["log_spent_last_30_days"].astype(float))).astype("int64"),
                pa.int64(),
            ),
            "usage_trend_log_ratio": pa.array(
                scored["usage_trend_log_ratio"].astype(float), pa.float64()
            ),
            "days_since_last_spend": pa.array(
                scored["days_since_last_spend"].astype("int64"), pa.int64()
            ),
            "is_trialing": pa.array(scored["is_trialing"] > 0, pa.bool_()),
            "scored_at": pa.array([scored_at.to_pydatetime()] * n, pa.timestamp("us")),
            "source_fresh_as_of": pa.array(
                [fresh.to_pydatetime() if fresh is not None else None] * n, pa.timestamp("us")
            ),
            "source_is_stale": pa.array([stale] * n, pa.bool_()),
            "model_trained_at": pa.array([trained_at.to_pydatetime()] * n, pa.timestamp("us")),
        }
    )


def _figure(value: float | None) -> dg.MetadataValue:
    if value is None or pd.isna(value):
        return dg.MetadataValue.text("n/a")
    return dg.MetadataValue.float(float(value))


class ChurnConfig(dg.Config):
    force_retrain: bool = False


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            CHURN_RISK_KEY,
            deps=list(CHURN_UPSTREAM),
            group_name=GROUP_MARTS,
            owners=[OWNER_DATA_ENGINEERING],
            kinds={"python", "scikit-learn"},
            description="For every active subscriber, the probability of cancelling within "
            f"{churn.HORIZON_DAYS} days (logistic regression on the ledger's history).",
        ),
        dg.AssetSpec(
            CHURN_MODEL_KEY,
            deps=list(CHURN_UPSTREAM),
            group_name=GROUP_MARTS,
            owners=[OWNER_DATA_ENGINEERING],
            kinds={"python", "scikit-learn"},
            description="The churn model: per-feature weights and its held-out figures "
            "next to the rule of thumb's; retrained weekly.",
        ),
    ],
)
def churn_model_assets(
    context: dg.AssetExecutionContext, config: ChurnConfig, warehouse: WarehouseParam
) -> Iterator[dg.MaterializeResult]:
    # read outside the write transaction: a first run has no stored model, and a failed query
    # must not abort the transaction the tables are written in
    with warehouse.connect() as con:
        inputs, cutoff, fresh = read_inputs(con)
        stored = _read_stored_model(con)
        rule_flags = {int(u): bool(f) for u, f in con.execute(RULE_FLAGS_SQL).fetchall()}
    stale = fresh is None or cutoff - fresh > stale_after()
    retrain = config.force_retrain or needs_retraining(
        stored[1] if stored else None, inputs.data_end
    )
    if retrain:
        result = churn.train_and_evaluate(inputs)
        model, trained_at = result.final_model, inputs.data_end
        card = model_card(result, trained_at)
        model_table = model_to_table(model, card)
    else:
        model, trained_at, card = stored
    scored = churn.score_today(inputs, model, inputs.data_end)
    scores = scores_to_table(scored, rule_flags, inputs.data_end, fresh, stale, trained_at)
    replaced: dict[str, pa.Table | str] = {f"{MARTS_PREFIX}.{CHURN_RISK_TABLE}": scores}
    if retrain:
        replaced[f"{MARTS_PREFIX}.{CHURN_MODEL_TABLE}"] = model_table
    with warehouse.transaction() as con:  # both tables, or neither
        session.replace_tables(con, replaced)
    ranked = (
        sorted(zip(model.features, model.weights, strict=False), key=lambda p: -abs(p[1]))
        if model
        else []
    )
    weights = (
        "\n".join(
            ["| feature | weight (per standard deviation) | meaning |", "|---|---|---|"]
            + [f"| {f} | {w:+.3f} | {churn.FEATURE_DOCS[f]} |" for f, w in ranked]
        )
        if model
        else "No model: " + str(card.get("model_verdict"))
    )
    figures = {
        MODEL_AUC_KEY: _figure(card.get("model_auc")),
        MODEL_PRECISION_KEY: _figure(card.get("model_precision_top_decile")),
        RULE_AUC_KEY: _figure(card.get("rule_auc")),
        RULE_PRECISION_KEY: _figure(card.get("rule_precision_top_decile")),
        VERDICT_KEY: dg.MetadataValue.text(
            f"model: {card.get('model_verdict')}; rule of thumb: {card.get('rule_verdict')}"
        ),
        "held_out_from": dg.MetadataValue.text(str(card.get("evaluation_start"))),
        "held_out_examples": dg.MetadataValue.int(int(card.get("evaluation_examples") or 0)),
        "held_out_cancellations": dg.MetadataValue.int(
            int(card.get("evaluation_cancellations") or 0)
        ),
        "model_trained_at": dg.MetadataValue.text(str(trained_at)),
        RETRAINED_KEY: dg.MetadataValue.bool(bool(retrain)),
        WEIGHTS_KEY: dg.MetadataValue.md(weights),
    }
    context.log.info(
        "churn model %s: %s", "retrained" if retrain else "reused", figures[VERDICT_KEY].value
    )
    yield dg.MaterializeResult(asset_key=CHURN_MODEL_KEY, metadata=figures)
    yield dg.MaterializeResult(
        asset_key=CHURN_RISK_KEY,
        metadata={
            "dagster/row_count": dg.MetadataValue.int(len(scored)),
            "scored_at": dg.MetadataValue.text(str(inputs.data_end)),
            "source_fresh_as_of": dg.MetadataValue.text(str(fresh)),
            "source_is_stale": dg.MetadataValue.bool(bool(stale)),
            **figures,
        },
    )


@dg.multi_asset_check(specs=signals.check_specs)
def usage_risk_checks(warehouse: WarehouseParam) -> Iterator[dg.AssetCheckResult]:
    with warehouse.connect(read_only=True) as con:
        rows = signals.read_flagged(con)
    yield from signals.signal_check_results(rows)


analytics_assets = [churn_model_assets]
