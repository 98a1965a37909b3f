"""Throw-away databases on the local MariaDB and PostgreSQL servers, for tests.

Tests that write a source database must not share one: parallel workers and leftovers from an
interrupted run would mix rows. Each test gets a uniquely named database created through the
server's root connection and dropped afterwards. In CI (`CI=true`) an unreachable server is a
failure, never a silent skip; on a laptop without the server the test is skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

MYSQL_ROOT_URL_VAR = "CREDITS_TEST_MYSQL_URL"
POSTGRES_ROOT_URL_VAR = "CREDITS_TEST_POSTGRES_URL"
DEFAULT_MYSQL_ROOT_URL = "mysql+pymysql://root@127.0.0.1:3306/"
DEFAULT_POSTGRES_ROOT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
CONNECT_TIMEOUT_SECONDS = 5
DATABASE_PREFIX = "cp_test_"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def mysql_root_url() -> str:
    return os.environ.get(MYSQL_ROOT_URL_VAR) or DEFAULT_MYSQL_ROOT_URL


def postgres_root_url() -> str:
    return os.environ.get(POSTGRES_ROOT_URL_VAR) or DEFAULT_POSTGRES_ROOT_URL


def unique_database_name() -> str:
    return f"{DATABASE_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:10]}"


def _root_engine(url: str) -> sa.Engine:
    return sa.create_engine(
        url,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
        poolclass=sa.pool.NullPool,
    )


def _reachable_or_skip(engine: sa.Engine, what: str) -> None:
    """Skip when the server is down on a laptop; fail in CI, where the server is provisioned."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        if in_ci():
            raise RuntimeError(f"{what} is unreachable in CI: {exc}") from exc
        pytest.skip(f"{what} is not reachable: {exc.__class__.__name__}")


@contextmanager
def fresh_mysql_database() -> Iterator[str]:
    """Yield the URL of a new, empty MariaDB/MySQL database; drop it afterwards."""
    root = _root_engine(mysql_root_url())
    _reachable_or_skip(root, "MariaDB")
    name = unique_database_name()
    with root.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        yield (
            sa.engine.make_url(mysql_root_url())
            .set(database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with root.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        root.dispose()


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """Yield the URL of a new, empty PostgreSQL database; drop it (forcing sessions off)."""
    root = _root_engine(postgres_root_url())
    _reachable_or_skip(root, "PostgreSQL")
    name = unique_database_name()
    with root.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield (
            sa.engine.make_url(postgres_root_url())
            .set(database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with root.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        root.dispose()
