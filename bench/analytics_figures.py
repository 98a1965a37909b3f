"""The analytics' figures on a demo of N users: churn model vs rule of thumb, signals vs manifest.

The churn model's worth is its held-out figures and the signals' is how exactly they find the
demo's injected abusers; both depend on the demo's size, so this script generates a demo
(`--anomalies`, with its abusive users), runs a full `credits-pipeline materialize` with the cut-off
pinned to the end of the history, and prints the held-out AUC and precision in the top decile of
the model and of the rule of thumb (from `marts.churn_model`), and, per signal, the injected
abusers found, missed, and users flagged beyond them.

    .venv/bin/python bench/analytics_figures.py [--users 5000] [--seed 7] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402

from credits_pipeline import settings  # noqa: E402
from credits_pipeline.source.demo import generate  # noqa: E402

END = dt.date(2026, 11, 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", help="where the demo and warehouse go (default: a temp dir)")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="analytics_figures_"))
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "syllaby_v2.sqlite"
    summary = generate(
        f"sqlite:///{source}",
        users=args.users,
        seed=args.seed,
        end=END,
        anomalies=True,
        manifest_path=workdir / "manifest.json",
    )
    (workdir / "dagster_home").mkdir(exist_ok=True)
    env = {
        **os.environ,
        settings.SOURCE_URL_VAR: f"sqlite:///{source}",
        settings.WAREHOUSE_PATH_VAR: str(workdir / "warehouse.duckdb"),
        settings.LEDGER_START_DATE_VAR: (END - dt.timedelta(days=10)).isoformat(),
        settings.CUTOFF_AT_VAR: f"{END.isoformat()}T00:00:00",
        "DAGSTER_HOME": str(workdir / "dagster_home"),
    }
    run = subprocess.run(
        [sys.executable, "-m", "credits_pipeline.cli", "materialize", "--log-level", "WARNING"],
        env=env,
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        sys.exit(run.stdout[-3000:] + run.stderr[-3000:])
    con = duckdb.connect(str(workdir / "warehouse.duckdb"), read_only=True)
    card = con.execute(
        "select evaluation_start, train_examples, evaluation_examples, evaluation_cancellations,"
        " model_auc, model_precision_top_decile, rule_auc, rule_precision_top_decile,"
        " model_verdict, rule_verdict from marts.churn_model limit 1"
    ).fetchone()
    print(
        f"demo: {args.users} users, seed {args.seed}, "
        f"{summary.counts['credit_histories']} ledger rows; cut-off {END}"
    )
    print(
        f"churn, held out from {card[0]:%Y-%m-%d}: {card[2]} examples, {card[3]} cancellations "
        f"(base rate {card[3] / max(card[2], 1):.3f}); trained on {card[1]} examples"
    )
    print(f"  model:         AUC {card[4]:.3f}  precision@top decile {card[5]:.3f}  ({card[8]})")
    print(f"  rule of thumb: AUC {card[6]:.3f}  precision@top decile {card[7]:.3f}  ({card[9]})")
    manifest = json.loads((workdir / "manifest.json").read_text())
    flagged = con.execute("select signal, user_id from marts.usage_risk_signals where flagged")
    flagged = set(flagged.fetchall())
    injected = {(a["signal"], a["user_id"]) for a in manifest["abusers"]}
    for signal in sorted({s for s, _ in injected | flagged}):
        want = {u for s, u in injected if s == signal}
        got = {u for s, u in flagged if s == signal}
        print(
            f"  {signal:30s} injected {len(want)}  found {len(want & got)}  "
            f"missed {sorted(want - got)}  beyond {sorted(got - want)}"
        )
    print(f"workdir: {workdir}")


if __name__ == "__main__":
    main()
