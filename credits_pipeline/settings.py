"""Every environment variable the pipeline reads, in one place, with its default and its check.

Configuration comes only from the environment so that the same code location runs on a laptop
(embedded SQLite demo source, DuckDB warehouse under `data/`) and in production (MySQL, BigQuery,
PostgreSQL-backed Dagster) without edits. Secrets (database passwords inside `CREDITS_SOURCE_URL`,
webhook URLs, SMTP passwords) are read here and handed to resources through `dg.EnvVar` where
Dagster builds the resource, never printed: use `redact_url` before anything reaches a log.

Why each variable has a parser of its own (`parse_*`): the getters used at run time and
`configuration_problems`, which checks the whole environment once before any work starts, must
accept and refuse exactly the same values — a value the start-up check lets through must not crash
90 seconds into a run, and the message must name the variable, the value and what is allowed.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import sqlalchemy as sa

from credits_pipeline.source.tables import TABLES_BY_NAME

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
# `CREDITS_SOURCE_URL=demo`: the embedded SQLite demo database, created on first use. Only an
# explicit choice (the README's `make materialize` / `make ui` set it): a deployment that forgot
# the variable must fail to load, not reconcile demo users.
DEMO_SOURCE = "demo"
SOURCE_BACKENDS = ("mysql", "mariadb", "postgresql", "sqlite")
WAREHOUSE_KINDS = ("duckdb", "bigquery")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


class ConfigurationError(ValueError):
    """The environment or an argument holds a value the pipeline cannot use; a line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def _problem(var: str, raw: str, allowed: str) -> ConfigurationError:
    """One line: the variable, the value as given, what is allowed."""
    return ConfigurationError([f"{var}={raw!r} is not valid: {allowed}"])


def parse_source_url(raw: str | None) -> str:
    """`CREDITS_SOURCE_URL`: a SQLAlchemy URL of a supported engine, or `demo`; never unset."""
    raw = (raw or "").strip()
    if not raw:
        raise ConfigurationError(
            [
                f"{SOURCE_URL_VAR} is not set: set it to the source database's SQLAlchemy URL "
                f"(e.g. mysql+pymysql://reader@db-host/syllaby_v2) or to '{DEMO_SOURCE}' for the "
                "embedded demo database"
            ]
        )
    if raw == DEMO_SOURCE:
        return f"sqlite:///{default_source_path()}"
    allowed = (
        f"a SQLAlchemy URL such as mysql+pymysql://user@host/syllaby_v2 or "
        f"postgresql+psycopg://user@host/syllaby_v2 (engines: {', '.join(SOURCE_BACKENDS)}), "
        f"or '{DEMO_SOURCE}'"
    )
    try:
        parsed = sa.engine.make_url(raw)
    except Exception:
        # the value may hold a password: never echo an unparseable URL
        problem = f"{SOURCE_URL_VAR}=<unparseable URL> is not valid: {allowed}"
        raise ConfigurationError([problem]) from None
    if parsed.get_backend_name() not in SOURCE_BACKENDS:
        raise _problem(SOURCE_URL_VAR, redact_url(raw), allowed)
    if not parsed.database:
        raise _problem(SOURCE_URL_VAR, redact_url(raw), "the URL must name a database; " + allowed)
    return raw


def parse_warehouse_kind(raw: str | None) -> str:
    kind = (raw or "duckdb").strip().lower()
    if kind not in WAREHOUSE_KINDS:
        raise _problem(WAREHOUSE_VAR, raw or "", " or ".join(repr(k) for k in WAREHOUSE_KINDS))
    return kind


def parse_ledger_start_date(raw: str | None) -> dt.date:
    value = (raw or DEFAULT_LEDGER_START_DATE).strip()
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        allowed = "an ISO date YYYY-MM-DD, e.g. 2025-01-01"
        raise _problem(LEDGER_START_DATE_VAR, value, allowed) from None


def parse_ui_base_url(raw: str | None) -> str:
    value = (raw or "http://127.0.0.1:3000").strip()
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise _problem(UI_BASE_URL_VAR, value, "an http:// or https:// URL of the Dagster UI")
    return value.rstrip("/")


def parse_flag(var: str, raw: str | None) -> bool:
    value = (raw or "").strip().lower()
    if value in ("", *FALSE_WORDS):
        return False
    if value in TRUE_WORDS:
        return True
    raise _problem(var, raw or "", f"one of {', '.join(TRUE_WORDS + FALSE_WORDS)} (or unset)")


def _whole_number(var: str, raw: str | None, minimum: int, allowed: str) -> int | None:
    """A whole number at least `minimum` (`_` allowed between digits), None when unset."""
    value = (raw or "").strip()
    if not value:
        return None
    try:
        number = int(value.replace("_", ""))
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise _problem(var, raw or "", allowed)
    return number


def parse_positive_int(var: str, raw: str | None, what: str) -> int | None:
    return _whole_number(var, raw, 1, f"a positive whole number of {what}")


def parse_cutoff(raw: str | None) -> dt.datetime | None:
    value = (raw or "").strip()
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        allowed = "an ISO timestamp in UTC, e.g. 2026-03-01T02:00:00 or 2026-03-01T02:00:00Z"
        raise _problem(CUTOFF_AT_VAR, value, allowed) from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed.replace(microsecond=0)


MEMORY_LIMIT_PATTERN = re.compile(
    r"\d+(\.\d+)?\s*(b|kb|mb|gb|tb|kib|mib|gib|tib|k|m|g|t)", re.IGNORECASE
)


def parse_memory_limit(raw: str | None) -> str | None:
    value = (raw or "").strip()
    if not value:
        return None
    if not MEMORY_LIMIT_PATTERN.fullmatch(value):
        allowed = "an amount with a unit, e.g. 4GB, 512MB or 8GiB"
        raise _problem(DUCKDB_MEMORY_LIMIT_VAR, value, allowed)
    return value


def parse_replay(raw: str | None) -> str:
    value = (raw or "resume").strip().lower()
    if value not in REPLAY_MODES:
        raise _problem(REPLAY_VAR, raw or "", f"one of {', '.join(REPLAY_MODES)}")
    return value


def configuration_problems(
    environ: Mapping[str, str] | None = None, today: dt.date | None = None
) -> list[str]:
    """Every problem of the environment, one line each (variable, value, what is allowed).

    Pure: reads only `environ` (default `os.environ`) and `today` (default: today, UTC), so the
    CLI can refuse a bad configuration before any work and the code location can refuse to load.
    """
    env = os.environ if environ is None else environ
    today = today or dt.datetime.now(dt.UTC).date()
    checks: list[Callable[[], object]] = [
        lambda: parse_source_url(env.get(SOURCE_URL_VAR)),
        lambda: parse_warehouse_kind(env.get(WAREHOUSE_VAR)),
        lambda: _check_start_date(parse_ledger_start_date(env.get(LEDGER_START_DATE_VAR)), today),
        lambda: parse_ui_base_url(env.get(UI_BASE_URL_VAR)),
        lambda: parse_flag(BLOCK_REVENUE_ON_ERROR_VAR, env.get(BLOCK_REVENUE_ON_ERROR_VAR)),
        lambda: parse_cutoff(env.get(CUTOFF_AT_VAR)),
        lambda: parse_positive_int(DEMO_USERS_VAR, env.get(DEMO_USERS_VAR), "users"),
        lambda: parse_memory_limit(env.get(DUCKDB_MEMORY_LIMIT_VAR)),
        lambda: parse_replay(env.get(REPLAY_VAR)),
        lambda: parse_positive_int(REPLAY_BATCH_ROWS_VAR, env.get(REPLAY_BATCH_ROWS_VAR), "rows"),
        lambda: parse_shrink_fraction(env.get(SHRINK_FRACTION_VAR)),
        lambda: parse_source_stale_after(env.get(SOURCE_STALE_AFTER_HOURS_VAR)),
        lambda: parse_temp_directory(env.get(DUCKDB_TEMP_DIRECTORY_VAR)),
        lambda: parse_maximum_bytes_billed(env.get(BIGQUERY_MAXIMUM_BYTES_BILLED_VAR)),
        lambda: parse_allowed_shrinks(env.get(ALLOW_SHRINK_VAR)),
        lambda: parse_starttls(env.get(SMTP_STARTTLS_VAR), default=False),
        lambda: parse_smtp_port(env.get(SMTP_PORT_VAR), SMTP_PLAIN_PORT),
        lambda: parse_days(LEDGER_RECHECK_DAYS_VAR, env.get(LEDGER_RECHECK_DAYS_VAR), 0),
        lambda: parse_days(LEDGER_FULL_CHECK_DAYS_VAR, env.get(LEDGER_FULL_CHECK_DAYS_VAR), 0),
    ]
    problems: list[str] = []
    for check in checks:
        try:
            check()
        except ConfigurationError as exc:
            problems.extend(exc.problems)
    return problems


def _check_start_date(start: dt.date, today: dt.date) -> None:
    if start > today:
        allowed = f"a date not after today ({today} UTC)"
        raise _problem(LEDGER_START_DATE_VAR, start.isoformat(), allowed)


def raise_for_configuration(environ: Mapping[str, str] | None = None) -> None:
    """Raise one `ConfigurationError` listing every problem (the code location's load check)."""
    problems = configuration_problems(environ)
    if problems:
        raise ConfigurationError(problems)


def partition_problem(value: str, first: dt.date, last: dt.date | None) -> str | None:
    """Why `--partition value` cannot run (None when it can): a real day between first and last."""
    allowed = f"a day YYYY-MM-DD from {first} ({LEDGER_START_DATE_VAR})"
    allowed += f" to {last} (the last closed UTC day)" if last else " (no closed day yet)"
    try:
        day = dt.date.fromisoformat(value.strip())
    except ValueError:
        return f"--partition {value!r} is not valid: {allowed}"
    if last is None or not first <= day <= last:
        when = "before the ledger start" if day < first else "in the future"
        return f"--partition {value!r} is {when}: {allowed}"
    return None


def data_dir() -> Path:
    """Where embedded files live (demo source, DuckDB warehouse): `CREDITS_DATA_DIR` or `data/`."""
    return Path(os.environ.get(DATA_DIR_VAR) or PROJECT_ROOT / "data")


def default_source_path() -> Path:
    return data_dir() / "syllaby_v2_demo.sqlite"


def source_url_is_default() -> bool:
    """Whether the source is the embedded demo database (`CREDITS_SOURCE_URL=demo`)."""
    return (os.environ.get(SOURCE_URL_VAR) or "").strip() == DEMO_SOURCE


def source_url() -> str:
    """The operational database: `CREDITS_SOURCE_URL` (`demo`: the embedded SQLite demo database).

    Raises `ConfigurationError` when it is unset or malformed: there is no silent default.
    """
    return parse_source_url(os.environ.get(SOURCE_URL_VAR))


def configured_source_url() -> str | None:
    """`source_url()`, or None when it is unset or malformed (for labels computed at import)."""
    try:
        return source_url()
    except ConfigurationError:
        return None


def warehouse_kind() -> str:
    return parse_warehouse_kind(os.environ.get(WAREHOUSE_VAR))


def warehouse_path() -> Path:
    """The embedded DuckDB warehouse file: `CREDITS_WAREHOUSE_PATH` or `data/warehouse.duckdb`."""
    return Path(os.environ.get(WAREHOUSE_PATH_VAR) or data_dir() / "warehouse.duckdb")


def ledger_start_date() -> dt.date:
    """First day of the ledger's daily partitions (`CREDITS_LEDGER_START_DATE`, ISO date)."""
    return parse_ledger_start_date(os.environ.get(LEDGER_START_DATE_VAR))


def ui_base_url() -> str:
    return parse_ui_base_url(os.environ.get(UI_BASE_URL_VAR))


def block_revenue_on_error() -> bool:
    """Whether a failed ERROR ledger check blocks `marts/revenue_attribution` (off by default)."""
    return (os.environ.get(BLOCK_REVENUE_ON_ERROR_VAR) or "").strip().lower() in (
        "1",
        "true",
        "yes",
        "on",
    )


def redact_url(url: str) -> str:
    """A URL safe to show: no user, password or secret query value (see `redaction.redact_url`)."""
    from credits_pipeline.redaction import redact_url as redact  # one redaction for every URL

    return redact(url)


CUTOFF_AT_VAR = "CREDITS_CUTOFF_AT"
DEMO_USERS_VAR = "CREDITS_DEMO_USERS"


def pinned_cutoff() -> dt.datetime | None:
    """`CREDITS_CUTOFF_AT` (ISO timestamp, UTC) pins the extraction cut-off.

    Only for re-running a frozen source reproducibly (tests, demos): in production the cut-off is
    the moment of the consistent snapshot.
    """
    return parse_cutoff(os.environ.get(CUTOFF_AT_VAR))


def demo_users() -> int:
    """How many users the embedded demo database gets when it is created on first use."""
    return parse_positive_int(DEMO_USERS_VAR, os.environ.get(DEMO_USERS_VAR), "users") or 500


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

    Unset, `warehouse/memory.py` sizes it from the machine (a quarter of RAM, 256 MiB-1 GiB: the
    per-process budget that keeps each process under 2 GB, measured at 100,000 users). A larger
    ledger may need more: a statement that runs out fails naming this variable.
    """
    return parse_memory_limit(os.environ.get(DUCKDB_MEMORY_LIMIT_VAR))


REPLAY_VAR = "CREDITS_REPLAY"
REPLAY_MODES = ("resume", "full")


def replay_forced_full() -> bool:
    """`CREDITS_REPLAY=full` replays the whole ledger even when the stored state allows resuming.

    Default `resume`: the reconciliation replays only the rows above the previous run's checkpoint
    (and the users whose past rows changed), with the same result. `full` is for an operator who
    wants to rebuild the stored replay state from scratch, e.g. after restoring a warehouse backup.
    """
    return parse_replay(os.environ.get(REPLAY_VAR)) == "full"


REPLAY_BATCH_ROWS_VAR = "CREDITS_REPLAY_BATCH_ROWS"


def replay_batch_rows() -> int | None:
    """`CREDITS_REPLAY_BATCH_ROWS`: ledger rows the replay holds in memory at once (None:
    500,000, `reconcile.DEFAULT_BATCH_ROWS`).

    The replay streams its input in batches of this size; lower it on a small worker, raise it to
    spend fewer round trips on a large one. The result does not depend on it.
    """
    return parse_positive_int(REPLAY_BATCH_ROWS_VAR, os.environ.get(REPLAY_BATCH_ROWS_VAR), "rows")


# The shrink guard (credits_pipeline/warehouse/shrink_guard.py): a swap that would leave a raw table
# with fewer than this fraction of its rows, or none, fails unless the table is allowed to shrink.
SHRINK_FRACTION_VAR = "CREDITS_SHRINK_FRACTION"
ALLOW_SHRINK_VAR = "CREDITS_ALLOW_SHRINK"
ALLOW_SHRINK_ALL = "all"
DEFAULT_SHRINK_FRACTION = 0.5


def parse_shrink_fraction(raw: str | None) -> float:
    """`CREDITS_SHRINK_FRACTION` (0 to 1, default 0.5): the least share of its rows a raw table
    keeps.

    0 still refuses a table going to zero rows; 1 refuses any shrink at all.
    """
    raw = (raw or "").strip()
    if not raw:
        return DEFAULT_SHRINK_FRACTION
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise _problem(SHRINK_FRACTION_VAR, raw, "a number between 0 and 1")
    return value


def shrink_fraction() -> float:
    """The shrink guard's fraction from the environment (see `parse_shrink_fraction`)."""
    return parse_shrink_fraction(os.environ.get(SHRINK_FRACTION_VAR))


def parse_allowed_shrinks(raw: str | None) -> frozenset[str]:
    """`CREDITS_ALLOW_SHRINK`: contract tables (comma-separated) allowed to shrink, or `all`.

    An unknown name is refused, not ignored: `credit_history` would otherwise leave the guard on
    and the user puzzled why the run they meant to allow fails again.
    """
    names = frozenset(part.strip().lower() for part in (raw or "").split(",") if part.strip())
    known = {*TABLES_BY_NAME, ALLOW_SHRINK_ALL}
    if names - known:
        allowed = (
            f"comma-separated contract table names ({', '.join(sorted(TABLES_BY_NAME))}) "
            f"or {ALLOW_SHRINK_ALL}"
        )
        raise _problem(ALLOW_SHRINK_VAR, raw or "", allowed)
    return names


def allowed_shrinks() -> frozenset[str]:
    """The tables the shrink guard lets shrink in this run (see `parse_allowed_shrinks`)."""
    return parse_allowed_shrinks(os.environ.get(ALLOW_SHRINK_VAR))


# --- Operating it every morning (issue 11): source staleness ---
SOURCE_STALE_AFTER_HOURS_VAR = "CREDITS_SOURCE_STALE_AFTER_HOURS"
DEFAULT_SOURCE_STALE_AFTER_HOURS = 48.0


def source_stale_after() -> dt.timedelta:
    """`CREDITS_SOURCE_STALE_AFTER_HOURS` (default 48): how old the source's newest ledger row may
    be
    before the source counts as stale (the application stopped writing, or a replica stopped)."""
    return parse_source_stale_after(os.environ.get(SOURCE_STALE_AFTER_HOURS_VAR))


def parse_source_stale_after(raw: str | None) -> dt.timedelta:
    """`CREDITS_SOURCE_STALE_AFTER_HOURS`: a positive number of hours (default 48)."""
    raw = (raw or "").strip()
    if not raw:
        return dt.timedelta(hours=DEFAULT_SOURCE_STALE_AFTER_HOURS)
    try:
        hours = float(raw)
    except ValueError:
        hours = -1.0
    if not hours > 0:
        raise _problem(SOURCE_STALE_AFTER_HOURS_VAR, raw, "a positive number of hours")
    return dt.timedelta(hours=hours)


# -- how often closed ledger days are compared with the source (issue 10, item 2) ----------------

LEDGER_RECHECK_DAYS_VAR = "CREDITS_LEDGER_RECHECK_DAYS"
DEFAULT_LEDGER_RECHECK_DAYS = 2
LEDGER_FULL_CHECK_DAYS_VAR = "CREDITS_LEDGER_FULL_CHECK_DAYS"
DEFAULT_LEDGER_FULL_CHECK_DAYS = 7


def parse_days(var: str, raw: str | None, default: int) -> int:
    """A whole number of days, zero or more (`default` when unset)."""
    number = _whole_number(var, raw, 0, "a whole number of days, 0 or more")
    return default if number is None else number


def ledger_recheck_days() -> int:
    """`CREDITS_LEDGER_RECHECK_DAYS` (default 2): the most recent closed days every cut compares
    with the source by fingerprint, reading the source by primary key from their first id.

    Rewrites and deletions in older days are found by the next full check; rows written late into
    any closed day are found every run, by id."""
    return parse_days(
        LEDGER_RECHECK_DAYS_VAR,
        os.environ.get(LEDGER_RECHECK_DAYS_VAR),
        DEFAULT_LEDGER_RECHECK_DAYS,
    )


def ledger_full_check_days() -> int:
    """`CREDITS_LEDGER_FULL_CHECK_DAYS` (default 7): a cut compares every closed day with the
    source (one scan of the source's ledger) when the last such full check is this many days older
    than its cut-off, or there was none; 0 makes every cut a full check."""
    return parse_days(
        LEDGER_FULL_CHECK_DAYS_VAR,
        os.environ.get(LEDGER_FULL_CHECK_DAYS_VAR),
        DEFAULT_LEDGER_FULL_CHECK_DAYS,
    )


# -- bounded memory and BigQuery cost (issue 10, items 4 and 6) ----------------------------------
DUCKDB_TEMP_DIRECTORY_VAR = "CREDITS_DUCKDB_TEMP_DIRECTORY"
BIGQUERY_MAXIMUM_BYTES_BILLED_VAR = "CREDITS_BIGQUERY_MAXIMUM_BYTES_BILLED"


def parse_temp_directory(raw: str | None) -> Path | None:
    """`CREDITS_DUCKDB_TEMP_DIRECTORY`: a directory (created on first spill), not an existing
    file."""
    value = (raw or "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise _problem(DUCKDB_TEMP_DIRECTORY_VAR, value, "a directory path (this is a file)")
    return path


def duckdb_temp_directory() -> Path | None:
    """Where DuckDB spills when it reaches its memory limit (None: `<warehouse file>.tmp/`)."""
    return parse_temp_directory(os.environ.get(DUCKDB_TEMP_DIRECTORY_VAR))


def parse_maximum_bytes_billed(raw: str | None) -> int | None:
    """`CREDITS_BIGQUERY_MAXIMUM_BYTES_BILLED`: a positive whole number of bytes, or unset."""
    return parse_positive_int(BIGQUERY_MAXIMUM_BYTES_BILLED_VAR, raw, "bytes, e.g. 10_000_000_000")


def bigquery_maximum_bytes_billed() -> int | None:
    """The most one BigQuery query job may bill; a job that would bill more fails before running.

    None (unset): no cap. A cap turns a runaway scan (a lost partition filter, a full refresh run
    by mistake) into one failed step instead of an invoice.
    """
    return parse_maximum_bytes_billed(os.environ.get(BIGQUERY_MAXIMUM_BYTES_BILLED_VAR))


# -- e-mail alerts (credits_pipeline/alerts/channels.py builds the channel) ----------------------
# The channels' other variables are read there; these two are parsed here so that the start-up
# check and the channel accept exactly the same values.
SMTP_PORT_VAR = "CREDITS_SMTP_PORT"
SMTP_STARTTLS_VAR = "CREDITS_SMTP_STARTTLS"
SMTP_PLAIN_PORT = 25
TCP_PORTS = range(1, 65536)


def parse_starttls(raw: str | None, default: bool) -> bool:
    """`CREDITS_SMTP_STARTTLS`: on/off, unset for `default`; anything else is refused.

    Refused, not defaulted: a typo (`ture`) would otherwise decide silently whether an SMTP
    password crosses the network in clear.
    """
    value = (raw or "").strip().lower()
    if not value:
        return default
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise _problem(SMTP_STARTTLS_VAR, raw or "", f"one of {', '.join(TRUE_WORDS + FALSE_WORDS)}")


def parse_smtp_port(raw: str | None, default: int) -> int:
    """`CREDITS_SMTP_PORT`: a TCP port number; unset for `default` (the channel's: 587 or 25)."""
    value = (raw or "").strip()
    if not value:
        return default
    try:
        port = int(value)
    except ValueError:
        port = 0
    if port not in TCP_PORTS:
        allowed = f"a TCP port number from {TCP_PORTS.start} to {TCP_PORTS.stop - 1}"
        raise _problem(SMTP_PORT_VAR, raw or "", allowed)
    return port
