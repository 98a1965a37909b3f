"""A dbt that stops before running any node is reported with its own error, not a missing file.

Under a DuckDB limit too small for it, dbt died and the step said only
`FileNotFoundError: ... run_results.json`: the failure message read the results dbt never wrote.
Here a real dbt is made to stop early (a profile it cannot find) and the step's description and
its metadata must carry dbt's own words.
"""

from __future__ import annotations

from credits_pipeline import settings
from credits_pipeline.transform.assets import _error_markdown, errored_nodes, failure_description
from credits_pipeline_tests.dbt_duckdb import dbt_resource, prepare_manifest


def test_a_dbt_that_stops_before_running_any_node_is_reported_with_its_own_error(
    tmp_path, monkeypatch
):
    monkeypatch.setenv(settings.WAREHOUSE_PATH_VAR, str(tmp_path / "warehouse.duckdb"))
    prepare_manifest()
    invocation = dbt_resource().cli(
        ["build", "--profile", "no_such_profile"],
        raise_on_error=False,
        target_path=tmp_path / "target",
    )
    list(invocation.stream_raw_events())
    assert not (tmp_path / "target" / "run_results.json").exists()

    errored = errored_nodes(invocation)
    assert errored == [invocation.dbt_command]
    description = failure_description(invocation, errored)
    assert description.startswith("dbt exited with code 2 before running any node: ")
    assert "Could not find profile named 'no_such_profile'" in description
    assert "Could not find profile named 'no_such_profile'" in _error_markdown(invocation, errored)
