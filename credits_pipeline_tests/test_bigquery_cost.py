"""BigQuery cost you can see and cap: labels, the billing cap, and bytes as asset metadata.

The pure helpers (label sanitizing, statistics from dbt's run results) are tested directly; on the
emulator (`-m bigquery`), the job configurations the real client sends are recorded by wrapping its
`query` method — every query still runs — and the assets' metadata is read back from the instance.
The emulator bills nothing, so the figures are checked for presence and type, not amount.
"""

from __future__ import annotations

import dagster as dg
import pytest
from google.cloud import bigquery

from credits_pipeline import settings
from credits_pipeline.warehouse import cost
from credits_pipeline_tests.bigquery_emulator import (  # noqa: F401 (a fixture)
    bigquery_emulator,
    emulator_warehouse,
)
from credits_pipeline_tests.harness import clean_ledger, step_failure_messages, write_source

# -- labels ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ledger/user_balance_reconciliation", "ledger_user_balance_reconciliation"),
        ("Marts.User Credit Daily", "marts_user_credit_daily"),
        ("  raw__credit_histories-v2 ", "raw__credit_histories-v2"),
        ("ünïcode€", "_n_code_"),
        ("x" * 80, "x" * 63),
        ("", ""),
    ],
)
def test_a_label_value_is_lowercase_letters_digits_dash_underscore_at_most_63(raw, expected):
    assert cost.label_value(raw) == expected


def test_a_label_key_starts_with_a_letter():
    assert cost.label_key("9lives") == "k_9lives"
    assert cost.label_key("_x") == "k__x"
    assert cost.label_key("App") == "app"
    assert len(cost.label_key("1" * 80)) == 63


def test_job_labels_name_the_app_and_when_known_the_asset_and_short_run_id():
    assert cost.job_labels() == {"app": "credits_pipeline"}
    labels = cost.job_labels("marts/user_balance_reconciliation", "3F2A9C1D-77e0-4b1e-9d7a-aa")
    assert labels == {
        "app": "credits_pipeline",
        "asset": "marts_user_balance_reconciliation",
        "run_id": "3f2a9c1d",
    }
    for key, value in labels.items():
        assert key == cost.label_key(key) and value == cost.label_value(value)


# -- statistics -----------------------------------------------------------------------------------


def test_job_statistics_add_up_and_count_a_missing_figure_as_zero():
    stats = cost.JobStatistics()
    stats.add(100, 10_485_760)
    stats.add(None, None)
    assert stats.metadata() == {
        cost.BYTES_PROCESSED_METADATA: 100,
        cost.BYTES_BILLED_METADATA: 10_485_760,
        cost.JOBS_METADATA: 2,
    }


def test_dbt_bytes_come_from_each_nodes_adapter_response_and_duckdb_nodes_have_none():
    run_results = {
        "results": [
            {
                "unique_id": "model.p.a",
                "adapter_response": {"bytes_processed": 5, "bytes_billed": 0},
            },
            {"unique_id": "model.p.b", "adapter_response": {"bytes_processed": None}},
            {
                "unique_id": "model.p.duck",
                "adapter_response": {"_message": "OK", "rows_affected": 3},
            },
            {"unique_id": "test.p.t", "adapter_response": {}},
        ]
    }
    by_node = cost.dbt_statistics_by_node(run_results)
    assert set(by_node) == {"model.p.a", "model.p.b"}
    assert by_node["model.p.a"].metadata()[cost.BYTES_PROCESSED_METADATA] == 5
    assert by_node["model.p.b"].metadata()[cost.BYTES_BILLED_METADATA] == 0


def test_dbt_outputs_gain_their_bytes_and_others_pass_unchanged():
    events = [
        dg.Output(None, "a", metadata={"unique_id": "model.p.a"}),
        dg.Output(None, "c", metadata={"unique_id": "model.p.c"}),
        dg.AssetCheckResult(asset_key=dg.AssetKey("a"), check_name="x", passed=True),
    ]
    run_results = {
        "results": [
            {
                "unique_id": "model.p.a",
                "adapter_response": {"bytes_processed": 7, "bytes_billed": 10_485_760},
            }
        ]
    }
    out = cost.with_dbt_statistics(events, run_results)
    assert out[0].metadata[cost.BYTES_BILLED_METADATA].value == 10_485_760
    assert out[0].metadata[cost.BYTES_PROCESSED_METADATA].value == 7
    assert cost.BYTES_BILLED_METADATA not in out[1].metadata
    assert out[2] is events[2]


def test_the_billing_cap_is_a_positive_number_of_bytes_or_unset():
    assert settings.parse_maximum_bytes_billed("10_000_000_000") == 10_000_000_000
    assert settings.parse_maximum_bytes_billed("") is None
    env = {settings.SOURCE_URL_VAR: "demo", settings.BIGQUERY_MAXIMUM_BYTES_BILLED_VAR: "10GB"}
    problems = settings.configuration_problems(env)
    assert len(problems) == 1 and settings.BIGQUERY_MAXIMUM_BYTES_BILLED_VAR in problems[0]


# -- on the emulator ------------------------------------------------------------------------------


@pytest.fixture
def sent_configs(monkeypatch):
    """Every (job config, labels) a real `bigquery.Client.query` call sends, recorded; still
    sent."""
    sent: list[bigquery.QueryJobConfig] = []
    original = bigquery.Client.query

    def recording_query(self, query, job_config=None, *args, **kwargs):
        sent.append(job_config)
        return original(self, query, job_config, *args, **kwargs)

    monkeypatch.setattr(bigquery.Client, "query", recording_query)
    return sent


@pytest.mark.bigquery
def test_every_query_job_carries_the_labels_and_the_billing_cap_and_bytes_are_counted(
    bigquery_emulator,
    sent_configs,
    monkeypatch,
):
    monkeypatch.setenv(settings.BIGQUERY_MAXIMUM_BYTES_BILLED_VAR, "1_000_000_000")
    warehouse = emulator_warehouse(bigquery_emulator)
    with warehouse.connect() as con:
        assert con.execute("select 41 + 1").fetchone() == (42,)
        meta = warehouse.usage_metadata(con)
    assert sent_configs, "no query job was sent"
    for config in sent_configs:
        assert config.labels == {"app": "credits_pipeline"}  # outside a Dagster run
        assert config.maximum_bytes_billed == 1_000_000_000
    assert meta[cost.JOBS_METADATA].value >= 1
    for key in (cost.BYTES_PROCESSED_METADATA, cost.BYTES_BILLED_METADATA):
        assert isinstance(meta[key].value, int) and meta[key].value >= 0


@pytest.mark.bigquery
def test_the_extraction_assets_label_their_jobs_and_record_bytes_processed_and_billed(
    bigquery_emulator,
    sent_configs,
    tmp_path,
):
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    from credits_pipeline.extract.assets import CUTOFF_KEY, extraction_assets, source_table_specs
    from credits_pipeline.source.resource import SourceDatabase

    url = f"sqlite:///{tmp_path / 'syllaby_v2.sqlite'}"
    write_source(url, clean_ledger())
    defs = dg.Definitions(
        assets=[*source_table_specs, *extraction_assets],
        resources={
            "source": SourceDatabase(url=url),
            "warehouse": emulator_warehouse(bigquery_emulator),
        },
        executor=dg.in_process_executor,
    )
    tags = {
        ASSET_PARTITION_RANGE_START_TAG: "2025-01-01",
        ASSET_PARTITION_RANGE_END_TAG: "2025-01-05",
    }
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, tags=tags, raise_on_error=False
        )
        assert result.success, step_failure_messages(result)
        short_run = result.run_id[:8]
        materialized = result.get_asset_materialization_events()
        assert materialized
        for event in materialized:
            if event.asset_key == CUTOFF_KEY:
                continue  # its step's jobs are counted once, on the users and open-slice tables
            meta = event.materialization.metadata
            for key in (cost.BYTES_PROCESSED_METADATA, cost.BYTES_BILLED_METADATA):
                assert isinstance(meta[key].value, int), (event.asset_key, key)
            assert meta[cost.JOBS_METADATA].value > 0
    assets = {config.labels.get("asset") for config in sent_configs}
    assert "raw_credit_histories" in assets
    for config in sent_configs:
        assert config.labels["app"] == "credits_pipeline"
        assert config.labels["run_id"] == short_run
        assert all(
            k == cost.label_key(k) and v == cost.label_value(v) for k, v in config.labels.items()
        )
