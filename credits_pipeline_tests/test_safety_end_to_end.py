"""Never leak, never wipe: `credits-pipeline materialize` as a hurried user runs it.

A password written in the URL's query string (`?password=...`, which psycopg and pymysql both
accept) must appear nowhere: not on the terminal, not in the Dagster instance (event log, run
storage, compute logs: every file under `DAGSTER_HOME`), not in the warehouse. And a source whose
tables were emptied must leave the warehouse — raw tables, dbt models and marts — row for row as it
was, with a non-zero exit naming the table and both counts, until the shrink is explicitly allowed.
Real servers, real subprocesses, an isolated `DAGSTER_HOME` and warehouse per run.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.instance.ref import InstanceRef

from credits_pipeline import settings
from credits_pipeline.source.demo import generate
from credits_pipeline.source.tables import TABLES
from credits_pipeline_tests.cli_run import (
    every_relation,
    materialize,
    warehouse_rows,
    warehouse_text,
)
from credits_pipeline_tests.db_servers import mysql_root_url

SECRET = "SeCrEt123"
MASK = "password=***"


TRUNCATED_USERS = 20
TRUNCATED_MONTHS = 2


def _generate(url: str) -> None:
    generate(url, users=60, seed=13, months=6)


def _files_mentioning(root: Path, secret: str) -> list[str]:
    """Every file under `root` whose bytes hold `secret` (plain, or as JSON/URL-escaped text)."""
    needles = [secret.encode(), secret.encode("utf-16-le")]
    return [
        str(path)
        for path in root.rglob("*")
        if path.is_file() and any(n in path.read_bytes() for n in needles)
    ]


def _event_log_text(home: Path) -> str:
    """Every event record of every run in the instance at `home`: messages and metadata, as text."""
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        texts = []
        for run in instance.get_runs():
            for record in instance.all_logs(run.run_id):
                texts.append(record.message or "")
                texts.append(repr(record.dagster_event))
        return "\n".join(texts)


def _assert_secret_nowhere(tmp_path: Path, runs, redacted_url_fragment: str) -> None:
    home = tmp_path / "dagster_home"
    for run in runs:
        assert SECRET not in run.stdout and SECRET not in run.stderr
    events = _event_log_text(home)
    # not vacuous: the instance did record the source URL — in its redacted form
    assert redacted_url_fragment in events, "the event log never names the source"
    assert SECRET not in events
    assert _files_mentioning(home, SECRET) == []  # event log, run storage, compute logs (storage/)
    assert (home / "storage").exists()
    assert SECRET not in warehouse_text(tmp_path / "warehouse.duckdb")
    assert _files_mentioning(tmp_path, SECRET) == [], "a file under the run's directories"


def _truncate(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for table in TABLES:
            conn.execute(sa.text(f"delete from {table.name}"))
    engine.dispose()


def _assert_refused_and_unchanged(tmp_path: Path, url: str, before: dict) -> None:
    run = materialize(tmp_path, url)
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    assert "raw.credit_histories for [" in run.stderr
    assert "the source returned 0 row(s) where the warehouse holds" in run.stderr
    assert f"{settings.ALLOW_SHRINK_VAR}=credit_histories" in run.stderr
    assert "Traceback" not in run.stderr.split("=== credits-pipeline materialize: summary ===")[-1]
    after = every_relation(tmp_path / "warehouse.duckdb", ("raw", "credits", "marts"))
    assert after.keys() == before.keys()
    for relation, rows in before.items():
        assert after[relation] == rows, f"{relation} changed"


def _state(tmp_path: Path) -> dict:
    return every_relation(tmp_path / "warehouse.duckdb", ("raw", "credits", "marts"))


# -- the shrink guard, end to end ----------------------------------------------------------------


# An emptied source refused, end to end: on PostgreSQL below (with the password check, and
# CREDITS_ALLOW_SHRINK letting it through); on SQLite in process (test_shrink_guard.py: the same
# extraction assets through Dagster), and on BigQuery there too.


def test_a_partition_run_after_the_source_ledger_lost_nine_rows_in_ten_is_refused_whole(tmp_path):
    """The daily run (`--partition` of a new day) on a ledger truncated to a tenth, users intact.

    Every closed day's fingerprint changed, so the cut re-reads them all; the guard judges the whole
    ledger before and after, refuses, and `raw.credit_histories` keeps every row. Three subprocess
    runs would cost minutes more; the allowed shrink is tested in process (test_shrink_guard.py).
    """
    url = f"sqlite:///{tmp_path / 'syllaby_v2.sqlite'}"
    today = dt.datetime.now(dt.UTC).date()
    midnight = dt.datetime.combine(today, dt.time())
    yesterday = today - dt.timedelta(days=1)
    generate(url, users=TRUNCATED_USERS, seed=13, months=TRUNCATED_MONTHS, end=yesterday)
    first_cut = (midnight - dt.timedelta(hours=20)).isoformat()  # yesterday is still open
    first = materialize(tmp_path, url, **{settings.CUTOFF_AT_VAR: first_cut})
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    wh = tmp_path / "warehouse.duckdb"
    ledger_before = warehouse_rows(wh, "select * from raw.credit_histories order by id")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("delete from credit_histories where id % 10 <> 0"))
    engine.dispose()

    daily = {settings.CUTOFF_AT_VAR: (midnight + dt.timedelta(hours=3)).isoformat()}
    partition = ("--partition", yesterday.isoformat())
    refused = materialize(tmp_path, url, args=partition, **daily)
    assert refused.returncode == 1, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "(closed days and raw.credit_histories__open: the whole ledger)" in refused.stderr
    assert f"where the warehouse holds {len(ledger_before)}" in refused.stderr
    assert f"{settings.ALLOW_SHRINK_VAR}=credit_histories" in refused.stderr
    assert warehouse_rows(wh, "select * from raw.credit_histories order by id") == ledger_before
    # CREDITS_ALLOW_SHRINK=credit_histories letting it through: test_shrink_guard.py, in process


# -- redaction (and the guard) on the real servers -----------------------------------------------


@pytest.mark.postgres
def test_a_query_string_password_appears_nowhere_and_an_emptied_postgresql_source_wipes_nothing(
    tmp_path, fresh_postgres_url
):
    url = f"{fresh_postgres_url}?password={SECRET}"  # the trust server ignores it; drivers pass it
    _generate(url)
    first = materialize(tmp_path, url)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert MASK in first.stdout  # the banner shows the redacted URL
    before = _state(tmp_path)
    reconciled = warehouse_rows(
        tmp_path / "warehouse.duckdb", "select count(*) from marts.user_balance_reconciliation"
    )
    assert reconciled == [(60,)]

    _truncate(fresh_postgres_url)
    _assert_refused_and_unchanged(tmp_path, url, before)
    third = materialize(tmp_path, url, **{settings.ALLOW_SHRINK_VAR: settings.ALLOW_SHRINK_ALL})
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    wh = tmp_path / "warehouse.duckdb"
    assert warehouse_rows(wh, "select count(*) from raw.users") == [(0,)]
    assert warehouse_rows(wh, "select count(*) from marts.user_balance_reconciliation") == [(0,)]

    database = sa.engine.make_url(fresh_postgres_url).database
    _assert_secret_nowhere(tmp_path, [first, third], f"127.0.0.1:5432/{database}?{MASK}")


@pytest.fixture
def mariadb_user_with_password(fresh_mysql_url):
    """A MariaDB account whose password is SECRET, allowed on the test's fresh database only."""
    root = sa.create_engine(mysql_root_url(), isolation_level="AUTOCOMMIT")
    user = f"cp_{uuid.uuid4().hex[:10]}"
    database = sa.engine.make_url(fresh_mysql_url).database
    with root.connect() as conn:
        conn.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{SECRET}'"))
        conn.execute(sa.text(f"CREATE USER '{user}'@'localhost' IDENTIFIED BY '{SECRET}'"))
        for host in ("%", "localhost"):
            conn.execute(sa.text(f"GRANT ALL PRIVILEGES ON `{database}`.* TO '{user}'@'{host}'"))
    try:
        yield (
            sa.engine.make_url(fresh_mysql_url)
            .set(username=user)
            .render_as_string(hide_password=False)
        )
    finally:
        with root.connect() as conn:
            for host in ("%", "localhost"):
                conn.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'{host}'"))
        root.dispose()


@pytest.mark.mysql
def test_a_query_string_password_to_mariadb_appears_nowhere(tmp_path, mariadb_user_with_password):
    url = f"{mariadb_user_with_password}?password={SECRET}"  # pymysql takes it as its password
    _generate(url)
    run = materialize(tmp_path, url)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    database = sa.engine.make_url(url).database
    _assert_secret_nowhere(tmp_path, [run], f"127.0.0.1:3306/{database}?{MASK}")


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://postgres@127.0.0.1:1/syllaby_v2?password={SECRET}&connect_timeout=5",
        f"mysql+pymysql://reader@127.0.0.1:1/syllaby_v2?password={SECRET}&connect_timeout=5",
    ],
)
def test_an_unreachable_source_with_a_query_string_password_fails_without_echoing_it(tmp_path, url):
    run = materialize(tmp_path, url)
    assert run.returncode == 1
    assert "cannot connect to the source database" in run.stderr
    assert f"127.0.0.1:1/syllaby_v2?connect_timeout=5&{MASK}" in run.stderr  # query sorted
    assert SECRET not in run.stdout + run.stderr
    assert SECRET not in _event_log_text(tmp_path / "dagster_home")
    assert _files_mentioning(tmp_path, SECRET) == []
