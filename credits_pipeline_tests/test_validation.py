"""The pandera models on clean and deliberately broken frames."""

from __future__ import annotations

import pandas as pd
import pytest

from credits_pipeline.source.tables import TABLES
from credits_pipeline.validation.json_check import json_validity
from credits_pipeline.validation.models import MODELS
from credits_pipeline.validation.quarantine import validate_batch


def ledger_frame(**overrides) -> pd.DataFrame:
    rows = {
        "id": [1, 2, 3],
        "user_id": [10, 10, 11],
        "credit_events_id": [1, 2, 2],
        "creditable_type": [None, "faceless", "real-clone"],
        "creditable_id": [None, 5, 6],
        "description": ["subscribe_to_trial", "faceless_video_generated", "real_clone_generated"],
        "label": [None, None, None],
        "calculative_index": [500, 13, 50],
        "event_value": [500, 2, 2],
        "amount": [500, 13, 50],
        "previous_amount": [0, 500, 0],
        "event_type": [1, 2, 2],
        "meta": ["[]", '{"duration": 13}', None],
        "created_at": ["2025-01-01 00:00:00", "2025-01-01 00:00:05", None],
        "updated_at": [None, None, None],
    }
    rows.update(overrides)
    return pd.DataFrame(rows, dtype=object)


def test_every_contract_table_has_a_model_with_exactly_its_extracted_columns():
    for table in TABLES:
        model_columns = list(MODELS[table.name].to_schema().columns)
        assert model_columns == table.extracted_names, table.name


def test_a_clean_ledger_frame_loads_whole_with_warehouse_types():
    batch = validate_batch("credit_histories", ledger_frame())
    assert len(batch.clean) == 3 and batch.rejected.empty and not batch.domain_warnings
    assert str(batch.clean["amount"].dtype) == "Int64"
    assert str(batch.clean["created_at"].dtype).startswith("datetime64")


def test_text_in_an_integer_column_is_quarantined_naming_the_column_and_value():
    batch = validate_batch("credit_histories", ledger_frame(amount=[500, "13 credits", 50]))
    assert batch.clean["id"].tolist() == [1, 3]
    [reason] = batch.rejected["_reason"].tolist()
    assert batch.rejected["id"].tolist() == ["2"]
    assert reason.startswith("amount: value '13 credits' cannot be stored")


def test_malformed_json_is_quarantined_but_empty_array_and_null_load():
    batch = validate_batch("credit_histories", ledger_frame(meta=["[]", "{oops", None]))
    assert batch.rejected["id"].tolist() == ["2"]
    assert batch.rejected["_column"].tolist() == ["meta"]
    assert "malformed JSON" in batch.rejected["_reason"].iloc[0]


def test_a_null_or_repeated_primary_key_is_quarantined_and_the_first_copy_kept():
    batch = validate_batch("credit_histories", ledger_frame(id=[1, 1, None]))
    assert batch.clean["id"].tolist() == [1]
    assert sorted(
        batch.rejected["_reason"].str.split(":").str[0]
        + ":"
        + batch.rejected["_reason"].str.contains("duplicate").astype(str)
    ) == [
        "id:False",
        "id:True",
    ]


def test_values_outside_the_documented_domains_load_and_are_counted_as_warnings():
    batch = validate_batch("credit_histories", ledger_frame(event_type=[1, 3, 2]))
    assert len(batch.clean) == 3 and batch.rejected.empty
    assert batch.domain_warnings == {"event_type: isin([1, 2])": 1}


def test_an_unknown_calculation_type_loads_because_the_ledger_rules_judge_it():
    frame = pd.DataFrame(
        {
            "id": [1, 2],
            "name": ["a", "b"],
            "type": [1, 2],
            "calculation_type": ["fixed", "percentage"],
            "value": [1.0, 2.5],
            "min_amount": [None, 3],
            "created_at": [None, None],
            "updated_at": [None, None],
        },
        dtype=object,
    )
    batch = validate_batch("credit_events", frame)
    assert (
        len(batch.clean) == 2
        and batch.domain_warnings["calculation_type: isin(['fixed', 'calculative'])"] == 1
    )


def test_a_batch_missing_a_contract_column_is_an_error_not_a_silent_drop():
    with pytest.raises(KeyError, match="credit_histories: batch lacks column"):
        validate_batch("credit_histories", ledger_frame().drop(columns=["meta"]))


def test_json_validity_is_decided_for_every_value():
    assert json_validity(pd.Series(["[]", '{"a": [1, 2]}', None, "nope", '{"a":'])).tolist() == [
        True,
        True,
        True,
        False,
        False,
    ]
