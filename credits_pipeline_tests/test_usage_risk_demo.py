"""The usage-risk signals on the demo: every injected abuser is found, a demo without abuse flags
nobody; the churn model scores the demo's active subscribers with its held-out figures.

Two demo databases of the same size and seed — one with the abusive users of every kind
(`abuse=True`, listed in the manifest's `abusers`), one without — go through a full
`credits-pipeline materialize` each (as test_end_to_end.py runs it), with the cut-off pinned to
the end of the generated history so that the windows anchored at it see the last weeks.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from credits_pipeline import settings
from credits_pipeline.analytics.signals import SIGNALS, check_name
from credits_pipeline.source.demo import generate

USERS = 120
MONTHS = 8
SEED = 5
END = dt.date(2026, 6, 1)
LEDGER_DAYS = 10


def _build(workdir: Path, abuse: bool) -> tuple[Path, dict | None, subprocess.CompletedProcess]:
    workdir.mkdir()
    source = workdir / "syllaby_v2.sqlite"
    summary = generate(
        f"sqlite:///{source}",
        users=USERS,
        seed=SEED,
        end=END,
        months=MONTHS,
        abuse=abuse,
        manifest_path=workdir / "manifest.json",
    )
    home = workdir / "dagster_home"
    home.mkdir()
    env = {
        **os.environ,
        settings.SOURCE_URL_VAR: f"sqlite:///{source}",
        settings.WAREHOUSE_PATH_VAR: str(workdir / "warehouse.duckdb"),
        settings.LEDGER_START_DATE_VAR: (END - dt.timedelta(days=LEDGER_DAYS)).isoformat(),
        settings.CUTOFF_AT_VAR: f"{END.isoformat()}T00:00:00",
        "DAGSTER_HOME": str(home),
    }
    run = subprocess.run(
        [sys.executable, "-m", "credits_pipeline.cli", "materialize", "--log-level", "WARNING"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return workdir / "warehouse.duckdb", json.loads(summary.manifest_path.read_text()), run


def _summary(run: subprocess.CompletedProcess) -> str:
    """The run's closing summary (the failed checks are listed there), after dbt's own output."""
    return run.stdout.rsplit("materialize: summary ===", 1)[-1]


def _query(warehouse: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def abusive_demo(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("usage_risk") / "abuse", abuse=True)


@pytest.fixture(scope="module")
def clean_demo(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("usage_risk") / "clean", abuse=False)


@pytest.mark.parametrize("signal", SIGNALS)
def test_each_signal_flags_exactly_the_injected_abusers_of_its_kind(abusive_demo, signal):
    warehouse, manifest, run = abusive_demo
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    injected = {a["user_id"] for a in manifest["abusers"] if a["signal"] == signal}
    assert injected, f"the demo injects no {signal} abuser"
    flagged = {
        u
        for (u,) in _query(
            warehouse,
            f"select user_id from marts.usage_risk_signals where flagged and signal = '{signal}'",
        )
    }
    assert flagged == injected
    # and the WARN check of the signal failed, as the run's summary lists it
    failed_check = re.escape(f"marts/usage_risk_signals:{check_name(signal)}")
    assert re.search(failed_check + r"\W+WARN\b", _summary(run)), _summary(run)


def test_a_demo_without_abuse_flags_no_user(clean_demo):
    warehouse, manifest, run = clean_demo
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert manifest["abusers"] == []
    assert _query(warehouse, "select count(*) from marts.usage_risk_signals")[0][0] > 0
    flagged = _query(
        warehouse, "select signal, user_id, score from marts.usage_risk_signals where flagged"
    )
    assert flagged == []
    assert ":usage_risk_" not in _summary(run)  # no usage-risk check failed


def test_the_abusers_overdraft_writeoffs_are_in_the_manifest_the_ledger_rules_match(abusive_demo):
    warehouse, manifest, _ = abusive_demo
    racing = {
        a["user_id"] for a in manifest["abusers"] if a["signal"] == "repeated_overdraft_writeoffs"
    }
    listed = {
        (a["user_id"], a["credit_history_id"])
        for a in manifest["anomalies"]
        if a["rule"] == "overdraft_writeoff"
    }
    found = set(
        _query(
            warehouse,
            "select user_id, credit_history_id from marts.ledger_anomalies"
            " where rule = 'overdraft_writeoff'",
        )
    )
    assert found == listed and {u for u, _ in listed} == racing


def test_the_churn_model_scores_every_active_subscriber_with_its_held_out_figures(abusive_demo):
    warehouse, _, _ = abusive_demo
    scored = _query(
        warehouse,
        "select count(*), min(churn_probability), max(churn_probability),"
        " bool_or(source_is_stale) from marts.churn_risk",
    )[0]
    active = _query(
        warehouse,
        "select count(distinct user_id) from raw.subscriptions where"
        " created_at <= timestamp '2026-06-01' and (ends_at is null or"
        " ends_at > timestamp '2026-06-01')",
    )[0][0]
    assert scored[0] == active > 0
    assert 0 <= scored[1] <= scored[2] <= 1 and scored[3] is False
    # the scores and the trends date the source from the same newest ledger row
    fresh_as_of = _query(
        warehouse,
        "select (select max(source_fresh_as_of) from marts.churn_risk),"
        " (select max(source_fresh_as_of) from marts.user_credit_trends)",
    )[0]
    assert fresh_as_of[0] is not None and fresh_as_of[0] == fresh_as_of[1]
    card = _query(
        warehouse,
        "select model_auc, rule_auc, model_verdict, rule_verdict,"
        " evaluation_start from marts.churn_model",
    )
    assert len({row for row in card}) == 1
    model_verdict = card[0][2]
    assert model_verdict.startswith(("signal", "no signal"))
