"""Shared fixtures: a fresh source database per test on SQLite, MariaDB and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    from credits_pipeline_tests.db_servers import fresh_mysql_database, fresh_postgres_database
except ImportError:  # the tests directory is not a package: pytest puts it on sys.path
    from db_servers import fresh_mysql_database, fresh_postgres_database


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
