"""Shared fixtures: a fresh source database per test on SQLite, MariaDB and PostgreSQL; and the
order in which the test files are handed to the workers (`HEAVY_FILES_FIRST`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    from credits_pipeline_tests.db_servers import fresh_mysql_database, fresh_postgres_database
except ImportError:  # the tests directory is not a package: pytest puts it on sys.path
    from db_servers import fresh_mysql_database, fresh_postgres_database


# Files whose tests run whole pipelines, heaviest first, as `pytest --durations` measured them on
# two cores (seconds of test time: 399, 195, 176, 160, 152, then 81 down to 47).
HEAVY_FILES_FIRST = (
    "test_late_rows.py",
    "test_bigquery.py",
    "test_end_to_end.py",
    "test_safety_end_to_end.py",
    "test_one_replay.py",
    "test_cli.py",
    "test_dbt_lineage.py",
    "test_browser.py",
    "test_usage_risk_demo.py",
    "test_schema_drift.py",
    "test_dbt_models.py",
    "test_shrink_guard.py",
    "test_ledger_read_scope.py",
    "test_quarantined_users.py",
    "test_dbt_snapshot.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Collect the heavy files first, every other file after them in its usual order.

    Why: `make test` runs `--dist loadfile --no-loadscope-reorder`, so xdist hands whole files to
    the two workers in collection order. Left to its default order (files with the most tests
    first), a long end-to-end file could start last and run alone while the other worker idled
    (~70-100 s of a 1,080-1,260 s suite). Long files first, short ones fill in at the end. A
    stale list only costs wall time, never a test; the sort is stable, so the tests of a file keep
    their order and stay together.
    """
    rank = {name: position for position, name in enumerate(HEAVY_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture
def fresh_sqlite_url(tmp_path: Path) -> str:
    """A SQLite file URL in the test's own temporary directory (the file does not exist yet)."""
    return f"sqlite:///{tmp_path / 'syllaby_v2.sqlite'}"


@pytest.fixture
def fresh_mysql_url() -> Iterator[str]:
    """A new, empty MariaDB database (dropped after the test); skipped only outside CI."""
    with fresh_mysql_database() as url:
        yield url


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database (dropped after the test); skipped only outside CI."""
    with fresh_postgres_database() as url:
        yield url
