"""Every environment variable the pipeline reads, in one place, with its default.

Configuration comes only from the environment so that the same code location runs on a laptop
(embedded SQLite source, DuckDB warehouse under `data/`) and in production (MySQL, BigQuery,
PostgreSQL-backed Dagster) without edits. Secrets (database passwords inside `CREDITS_SOURCE_URL`,
webhook URLs, SMTP passwords) are read here and handed to resources through `dg.EnvVar` where
Dagster builds the resource, never printed: use `redact_url` before anything reaches a log.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import sqlalchemy as sa

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_transform"

# Environment variable names, used verbatim by resources (dg.EnvVar) and documentation.
SOURCE_URL_VAR = "CREDITS_SOURCE_URL"
WAREHOUSE_VAR = "CREDITS_WAREHOUSE"
WAREHOUSE_PATH_VAR = "CREDITS_WAREHOUSE_PATH"
DATA_DIR_VAR = "CREDITS_DATA_DIR"
LEDGER_START_DATE_VAR = "CREDITS_LEDGER_START_DATE"
UI_BASE_URL_VAR = "CREDITS_UI_BASE_URL"
BLOCK_REVENUE_ON_ERROR_VAR = "CREDITS_BLOCK_REVENUE_ON_ERROR"

DEFAULT_LEDGER_START_DATE = "2025-01-01"


def data_dir() -> Path:
    """Where embedded files live (demo source, DuckDB warehouse): `CREDITS_DATA_DIR` or `data/`."""
    return Path(os.environ.get(DATA_DIR_VAR) or PROJECT_ROOT / "data")


def default_source_path() -> Path:
    return data_dir() / "syllaby_v2_demo.sqlite"


def source_url_is_default() -> bool:
    return not os.environ.get(SOURCE_URL_VAR)


def source_url() -> str:
    """The operational database: `CREDITS_SOURCE_URL`, or the embedded SQLite demo database."""
    return os.environ.get(SOURCE_URL_VAR) or f"sqlite:///{default_source_path()}"


def warehouse_kind() -> str:
    kind = (os.environ.get(WAREHOUSE_VAR) or "duckdb").strip().lower()
    if kind not in ("duckdb", "bigquery"):
        raise ValueError(f"{WAREHOUSE_VAR} must be 'duckdb' or 'bigquery', not {kind!r}")
    return kind


def warehouse_path() -> Path:
    """The embedded DuckDB warehouse file: `CREDITS_WAREHOUSE_PATH` or `data/warehouse.duckdb`."""
    return Path(os.environ.get(WAREHOUSE_PATH_VAR) or data_dir() / "warehouse.duckdb")


def ledger_start_date() -> dt.date:
    """First day of the ledger's daily partitions (`CREDITS_LEDGER_START_DATE`, ISO date)."""
    raw = os.environ.get(LEDGER_START_DATE_VAR) or DEFAULT_LEDGER_START_DATE
    return dt.date.fromisoformat(raw)


def ui_base_url() -> str:
    return (os.environ.get(UI_BASE_URL_VAR) or "http://127.0.0.1:3000").rstrip("/")


def block_revenue_on_error() -> bool:
    """Whether a failed ERROR ledger check blocks `marts/revenue_attribution` (off by default)."""
    return (os.environ.get(BLOCK_REVENUE_ON_ERROR_VAR) or "").strip().lower() in ("1", "true", "yes", "on")


def redact_url(url: str) -> str:
    """A database URL safe to show: driver, host, port and database, never user or password."""
    try:
        parsed = sa.engine.make_url(url)
    except Exception:
        return "<unparseable database URL>"
    return parsed._replace(username=None, password=None).render_as_string(hide_password=True)


CUTOFF_AT_VAR = "CREDITS_CUTOFF_AT"
DEMO_USERS_VAR = "CREDITS_DEMO_USERS"


def pinned_cutoff() -> dt.datetime | None:
    """`CREDITS_CUTOFF_AT` (ISO timestamp, UTC) pins the extraction cut-off.

    Only for re-running a frozen source reproducibly (tests, demos): in production the cut-off is
    the moment of the consistent snapshot.
    """
    raw = os.environ.get(CUTOFF_AT_VAR)
    if not raw:
        return None
    value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.replace(microsecond=0)


def demo_users() -> int:
    """How many users the embedded demo database gets when it is created on first use."""
    return int(os.environ.get(DEMO_USERS_VAR) or 500)


# BigQuery (CREDITS_WAREHOUSE=bigquery): the project, the prefix of the raw/credits/marts datasets,
# their location, and an optional base64 service-account key (else Application Default Credentials).
BIGQUERY_PROJECT_VAR = "CREDITS_BIGQUERY_PROJECT"
BIGQUERY_DATASET_PREFIX_VAR = "CREDITS_BIGQUERY_DATASET_PREFIX"
BIGQUERY_LOCATION_VAR = "CREDITS_BIGQUERY_LOCATION"
BIGQUERY_CREDENTIALS_VAR = "CREDITS_BIGQUERY_CREDENTIALS"


def bigquery_dataset_prefix() -> str:
    return os.environ.get(BIGQUERY_DATASET_PREFIX_VAR) or ""


DUCKDB_MEMORY_LIMIT_VAR = "CREDITS_DUCKDB_MEMORY_LIMIT"


def duckdb_memory_limit() -> str | None:
    """`CREDITS_DUCKDB_MEMORY_LIMIT`, e.g. '4GB': how much DuckDB may use before spilling.

    Unset, DuckDB's own default applies (80% of RAM). Measured at 100,000 users (6.6 M ledger rows):
    a 2 GB limit made the reconciliation's row checks fail with an out-of-memory error, so a limit is
    an operator's choice for the machine at hand, not a default.
    """
    return os.environ.get(DUCKDB_MEMORY_LIMIT_VAR) or None


REPLAY_VAR = "CREDITS_REPLAY"
REPLAY_MODES = ("resume", "full")


def replay_forced_full() -> bool:
    """`CREDITS_REPLAY=full` replays the whole ledger even when the stored state allows resuming.

    Default `resume`: the reconciliation replays only the rows above the previous run's checkpoint
    (and the users whose past rows changed), with the same result. `full` is for an operator who
    wants to rebuild the stored replay state from scratch, e.g. after restoring a warehouse backup.
    """
    raw = (os.environ.get(REPLAY_VAR) or "resume").strip().lower()
    if raw not in REPLAY_MODES:
        raise ValueError(f"{REPLAY_VAR} must be one of {', '.join(REPLAY_MODES)}, not {raw!r}")
    return raw == "full"


REPLAY_BATCH_ROWS_VAR = "CREDITS_REPLAY_BATCH_ROWS"


def replay_batch_rows() -> int | None:
    """`CREDITS_REPLAY_BATCH_ROWS`: ledger rows the replay holds in memory at once (None: 2,000,000).

    The replay streams its input in batches of this size; lower it on a small worker, raise it to
    spend fewer round trips on a large one. The result does not depend on it.
    """
    raw = os.environ.get(REPLAY_BATCH_ROWS_VAR)
    if not raw:
        return None
    value = int(raw)
    if value < 1:
        raise ValueError(f"{REPLAY_BATCH_ROWS_VAR} must be a positive number of rows, not {raw!r}")
    return value


# --- Operating it every morning (issue 11): source staleness ---
SOURCE_STALE_AFTER_HOURS_VAR = "CREDITS_SOURCE_STALE_AFTER_HOURS"
DEFAULT_SOURCE_STALE_AFTER_HOURS = 48.0


def source_stale_after() -> dt.timedelta:
    """`CREDITS_SOURCE_STALE_AFTER_HOURS` (default 48): how old the source's newest ledger row may be
    before the source counts as stale (the application stopped writing, or a replica stopped)."""
    raw = (os.environ.get(SOURCE_STALE_AFTER_HOURS_VAR) or "").strip()
    if not raw:
        return dt.timedelta(hours=DEFAULT_SOURCE_STALE_AFTER_HOURS)
    try:
        hours = float(raw)
    except ValueError:
        hours = -1.0
    if not hours > 0:
        raise ValueError(
            f"{SOURCE_STALE_AFTER_HOURS_VAR} must be a positive number of hours, not {raw!r}"
        )
    return dt.timedelta(hours=hours)
