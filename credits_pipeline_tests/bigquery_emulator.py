"""A local BigQuery for the tests marked `bigquery`: bqemulator (the BigQuery REST API on DuckDB).

The production warehouse is BigQuery; these tests run the same code against bqemulator, started
once per test session on free ports from its own virtualenv (`.ci/install-bqemulator` creates
`.bqemulator-venv/` next to the repository: the emulator pins its own duckdb). Every workaround
the emulator needs lives here, never in the product code:
- it accepts only resumable uploads, so load jobs are forced onto them (`_MAX_MULTIPART_SIZE`);
- it needs no credentials: the warehouse gets `api_endpoint` and uses anonymous credentials;
  dbt (method `oauth-secrets`) gets a dummy token and the endpoint (`emulator_env`);
- a `credits-pipeline` subprocess gets the upload setting through `SUBPROCESS_PRELUDE`.
In CI (`CI=true`) a missing emulator is a failure; on a laptop the tests are skipped.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
EMULATOR_BIN = REPO_ROOT / ".bqemulator-venv" / "bin" / "bqemulator"
PROJECT = "test-project"
START_TIMEOUT_SECONDS = 60
# Run first by a Python subprocess of the pipeline (`python -c PRELUDE; ...`): the emulator rejects
# multipart uploads, so every load job is sent as a resumable upload (as the fixture does here).
SUBPROCESS_PRELUDE = "import google.cloud.bigquery.client as c; c._MAX_MULTIPART_SIZE = 0"
STOP_TIMEOUT_SECONDS = 10


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(endpoint: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"bqemulator exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            )
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{endpoint}/bigquery/v2/projects/{PROJECT}/datasets", timeout=2).ok:
                return
        time.sleep(0.3)
    raise RuntimeError(
        f"bqemulator did not answer within {START_TIMEOUT_SECONDS}s:\n{log.read_text()[-3000:]}"
    )


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory) -> Iterator[str]:
    """The REST endpoint (http://127.0.0.1:PORT) of a running bqemulator, project `test-project`."""
    if not EMULATOR_BIN.exists():
        message = f"{EMULATOR_BIN} is missing: run .ci/install-bqemulator"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    import google.cloud.bigquery.client as bigquery_client

    # The emulator rejects multipart uploads: send every load job as a resumable upload.
    bigquery_client._MAX_MULTIPART_SIZE = 0
    rest, grpc = _free_port(), _free_port()
    log = tmp_path_factory.mktemp("bqemulator") / "bqemulator.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                str(EMULATOR_BIN),
                "start",
                "--rest-host",
                "127.0.0.1",
                "--rest-port",
                str(rest),
                "--grpc-host",
                "127.0.0.1",
                "--grpc-port",
                str(grpc),
                "--project",
                PROJECT,
                "--log-level",
                "warning",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{rest}"
    try:
        _wait_until_up(endpoint, process, log)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def unique_prefix() -> str:
    """A dataset prefix of its own for one test (datasets `<prefix>raw`, ...)."""
    return f"t{uuid.uuid4().hex[:8]}_"


def emulator_warehouse(endpoint: str, prefix: str | None = None):
    from credits_pipeline.warehouse.bigquery_warehouse import BigQueryWarehouse

    return BigQueryWarehouse(
        project=PROJECT, api_endpoint=endpoint, dataset_prefix=prefix or unique_prefix()
    )


def emulator_env(endpoint: str, prefix: str) -> dict[str, str]:
    """Environment of a pipeline subprocess (and of the dbt it starts) on the emulator."""
    from credits_pipeline import settings
    from credits_pipeline.warehouse.bigquery_warehouse import EMULATOR_HOST_VAR

    return {
        settings.WAREHOUSE_VAR: "bigquery",
        settings.BIGQUERY_PROJECT_VAR: PROJECT,
        settings.BIGQUERY_DATASET_PREFIX_VAR: prefix,
        EMULATOR_HOST_VAR: endpoint,
        # dbt-bigquery: an access token (any string: the emulator checks none) and the endpoint
        "CREDITS_BIGQUERY_METHOD": "oauth-secrets",
        "CREDITS_BIGQUERY_TOKEN": "emulator",
        "CREDITS_BIGQUERY_API_ENDPOINT": endpoint,
    }
