"""The dbt CLI resource learns dbt's version without starting dbt (transform/dbt_project.py).

dagster-dbt runs `dbt --version` before the first dbt step of every run (2.9 s at 100,000
users); the resource reads the installed dbt-core's version instead, for this environment's own
`dbt` only, and these tests hold it to what that executable itself says.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import dagster_dbt.core.resource as dagster_dbt_resource
import pytest
from packaging import version

from credits_pipeline.transform.dbt_project import (
    CreditsDbtCliResource,
    dbt_cli_resource,
    dbt_executable,
    installed_dbt_version,
)
from credits_pipeline_tests.dbt_duckdb import PROJECT


def test_the_installed_version_is_the_one_this_environments_dbt_reports():
    printed = subprocess.run(
        [dbt_executable(), "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
    ).stdout
    installed = installed_dbt_version(dbt_executable())
    assert installed is not None
    assert f"installed: {installed}" in printed, printed


def test_a_dbt_step_learns_the_version_without_starting_dbt(monkeypatch):
    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"dbt was started: {args}")

    monkeypatch.setattr(dagster_dbt_resource, "check_output", no_subprocess)
    resource = dbt_cli_resource(PROJECT)
    assert isinstance(resource, CreditsDbtCliResource)
    assert resource._cli_version == version.parse(importlib.metadata.version("dbt-core"))


def test_a_dbt_invocation_through_the_resource_never_starts_dbt_for_its_version(
    monkeypatch, tmp_path: Path
):
    """The real path: dagster-dbt's `cli()` reads the version before it starts dbt. Should an
    upgrade of dagster-dbt read it under another name, this invocation would call
    `check_output` and fail, instead of the override silently no longer applying."""
    asked: list = []

    def no_subprocess(*args, **kwargs):
        asked.append(args)
        raise AssertionError(f"dbt was started for its version: {args}")

    monkeypatch.setattr(dagster_dbt_resource, "check_output", no_subprocess)
    monkeypatch.setenv("CREDITS_WAREHOUSE_PATH", str(tmp_path / "warehouse.duckdb"))
    invocation = dbt_cli_resource(PROJECT).cli(
        ["parse"], raise_on_error=False, target_path=tmp_path / "target"
    )
    assert invocation.wait().is_successful()
    assert asked == []


def test_another_dbt_executable_is_still_asked_for_its_version(tmp_path: Path):
    other = tmp_path / "dbt"
    other.write_text("#!/bin/sh\necho 'Core:'\necho '  - installed: 2.0.5'\n")
    other.chmod(0o755)
    assert installed_dbt_version(str(other)) is None
    resource = CreditsDbtCliResource(
        project_dir=PROJECT,
        profiles_dir=str(PROJECT.profiles_dir),
        target=PROJECT.target,
        dbt_executable=str(other),
    )
    assert resource._cli_version == version.parse("2.0.5")  # printed by that executable


@pytest.mark.skipif(sys.platform != "linux", reason="the venv layout checked is Linux's")
def test_only_the_dbt_beside_this_interpreter_counts_as_this_environments():
    assert installed_dbt_version(str(Path(sys.executable).parent / "dbt")) is not None
    assert installed_dbt_version("dbt") is None
