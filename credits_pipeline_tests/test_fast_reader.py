"""The fast read path (connectorx) against the robust one (SQLAlchemy), on real MariaDB and
PostgreSQL.

Each database test writes its own `syllaby_v2` into a freshly created database (`cp_test_<uuid>`,
dropped afterwards), reads the ledger both ways and requires the same rows, values and warehouse
types, the same quarantine and the same domain warnings. Without a reachable server the test is
skipped, except in CI (`CI=true`), where it fails.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from credits_pipeline.source import fast_reader
from credits_pipeline.source.demo import generate
from credits_pipeline.source.reader import read_batches as robust_read_batches
from credits_pipeline.source.tables import CREDIT_HISTORIES, TABLES, Table
from credits_pipeline.validation.quarantine import REASON_COLUMN, validate_batch
from credits_pipeline.warehouse import session
from credits_pipeline_tests.harness import ledger_row, ts, write_source

SERVERS = {
    "mysql": os.environ.get("CREDITS_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/"),
    "postgresql": os.environ.get(
        "CREDITS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ),
}
WHERE = "created_at >= :start AND created_at < :end"
PARAMS = {"start": ts(0), "end": ts(3)}
SMALL_BATCH = 2  # several batches from five rows: exercises streaming and the resume point


def _fresh_database(family: str) -> Iterator[str]:
    server = sa.create_engine(SERVERS[family], isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        server.dispose()
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"no {family} server at {SERVERS[family]}: {str(exc).splitlines()[0]}")
    name = f"cp_test_{uuid.uuid4().hex[:12]}"
    with server.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield (
            sa.engine.make_url(SERVERS[family])
            .set(database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with server.connect() as conn:
            force = " WITH (FORCE)" if family == "postgresql" else ""
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{force}")
        server.dispose()


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    yield from _fresh_database("mysql")


@pytest.fixture(params=["mysql", "postgresql"])
def source_url(request) -> Iterator[str]:
    yield from _fresh_database(request.param)


def varied_ledger(family: str) -> list[dict]:
    """Rows that exercise every column kind: NULLs, unicode, JSON, big ids, domain oddities."""
    rows = [
        ledger_row(1, 1, 1, 500, 0, ts(0, 1), meta='{"credits": 500, "note": "crédit ✓"}'),
        ledger_row(
            2,
            1,
            2,
            15,
            500,
            ts(0, 23.5),
            creditable_type="faceless",
            creditable_id=7,
            description="Faceless video «generated»",
            label="faceless_video_generated",
            meta=None,
        ),
        ledger_row(3, 2, 1, 500, 0, ts(1, 3), event_type=3),  # a domain warning, loaded
        ledger_row(2**40, 2, 3, 0, 100, ts(1, 4), calculative_index=0, meta="[]", updated_at=None),
        ledger_row(2**40 + 1, 3, 2, 7, 7, ts(2, 12.5), description="O'Reilly \\ 100% ; --"),
        ledger_row(2**40 + 2, 3, 2, 7, 0, ts(5)),  # outside the partition range: not read
        ledger_row(2**40 + 3, 3, 2, 7, 0, None),  # NULL created_at: not read either
    ]
    if (
        family == "postgresql"
    ):  # MariaDB's JSON CHECK refuses it at insert; PostgreSQL's TEXT does not
        rows.append(ledger_row(2**40 + 4, 4, 2, 1, 1, ts(2, 13), meta="{not json"))
    return rows


def _rows(batches) -> list[dict]:
    """Every row as plain Python values, whatever the batch kind (Arrow or object DataFrame)."""
    out = []
    for batch in batches:
        if isinstance(batch, pa.Table):
            out += batch.to_pylist()
        else:
            # the robust frames hold the driver's objects; pandas shows a missing one as None or NaN
            out += [
                {k: (None if pd.isna(v) else v) for k, v in r.items()}
                for r in batch.to_dict("records")
            ]
    return out


PYTHON_TYPES = {"id": int, "int": int, "str": str, "json": str, "ts": dt.datetime}


def _typed(rows: list[dict]) -> list[list[tuple]]:
    """Rows with each value's type checked against the contract's kind (so 1.0 or '1' fail)."""
    kinds = {c.name: c.kind for c in CREDIT_HISTORIES.extracted_columns}
    for row in rows:
        for name, value in row.items():
            assert value is None or type(value) is PYTHON_TYPES[kinds[name]], (name, value)
    return [list(r.items()) for r in rows]


def _as_python(rows: list[dict]) -> list[dict]:
    """The robust path's values as the driver gave them, before pandas' inference touched them.

    `DataFrame.from_records` makes an int column with a NULL float64 and datetimes Timestamps
    before `.astype(object)`; undo exactly that (the values compared are still the driver's).
    """
    kinds = {c.name: c.kind for c in CREDIT_HISTORIES.extracted_columns}
    out = []
    for row in rows:
        fixed = {}
        for name, value in row.items():
            if value is not None and kinds[name] in ("id", "int") and isinstance(value, float):
                assert value.is_integer(), (name, value)
                value = int(value)
            elif isinstance(value, pd.Timestamp):
                value = value.to_pydatetime()
            fixed[name] = value
        out.append(fixed)
    return out


def _staged(batches, table: Table = CREDIT_HISTORIES) -> tuple[list[tuple], list[tuple], dict]:
    """Validate and stage the batches in a throw-away DuckDB: warehouse rows, quarantine,
    warnings."""
    con = duckdb.connect()
    con.execute("create schema raw")
    stager = session.stager(con, table)
    warnings: dict = {}
    for frame in batches:
        batch = validate_batch(table.name, frame)
        stager.append(batch, "x")
        for k, v in batch.domain_warnings.items():
            warnings[k] = warnings.get(k, 0) + v
    rows = con.execute(f"select * from {stager.stage} order by id").fetchall()
    rejected = con.execute(
        f"select id, _column, {REASON_COLUMN} from {stager.stage_rejected} order by id"
    ).fetchall()
    con.close()
    return rows, rejected, warnings


def _robust(url: str, batch_size: int = SMALL_BATCH) -> list:
    engine = fast_reader.create_source_engine(url)
    try:
        with engine.connect() as conn:
            return list(robust_read_batches(conn, CREDIT_HISTORIES, WHERE, PARAMS, batch_size))
    finally:
        engine.dispose()


def _no_fallback(reason: str) -> None:
    raise AssertionError(f"unexpected fallback: {reason}")


# -- the same rows, values and types as the SQLAlchemy path ---------------------------------------


@pytest.mark.mysql
@pytest.mark.postgres
def test_fast_path_reads_exactly_what_the_sqlalchemy_path_reads(source_url):
    family = fast_reader.dialect_family(source_url)
    write_source(source_url, varied_ledger(family))
    fast = list(
        fast_reader.read_batches(
            source_url, CREDIT_HISTORIES, WHERE, PARAMS, SMALL_BATCH, on_fallback=_no_fallback
        )
    )
    robust = _robust(source_url)

    assert all(isinstance(b, pa.Table) and b.num_rows <= SMALL_BATCH for b in fast)
    # same rows, same order, same values of the same Python types (naive UTC datetimes, ints, str)
    assert _typed(_rows(fast)) == _typed(_as_python(_rows(robust)))
    assert [r["id"] for r in _rows(fast)] == [1, 2, 3, 2**40, 2**40 + 1] + (
        [2**40 + 4] if family == "postgresql" else []
    )
    assert _staged(fast) == _staged(robust)  # same warehouse rows, quarantine and warnings
    rows, rejected, warnings = _staged(fast)
    assert rows[1][-2] == ts(0, 23.5) and all(
        isinstance(v, dt.datetime) for v in (r[-2] for r in rows)
    )
    assert warnings == {"event_type: isin([1, 2])": 1}
    if family == "postgresql":
        assert rejected == [(str(2**40 + 4), "meta", "meta: malformed JSON text '{not json'")]
    else:
        assert rejected == []


CONTENT_TABLES = [t for t in TABLES if t.strategy in ("full", "merge")]


@pytest.mark.mysql
@pytest.mark.postgres
def test_every_content_table_reads_the_same_through_both_paths(source_url):
    """The content tables take the fast path too (`raw/<table>` in extract/assets.py): on the
    demo generator's source, anomalies included, both paths give the same warehouse rows,
    quarantine and warnings, table by table, in full and from an `updated_at` watermark."""
    generate(source_url, users=60, anomalies=True, months=6)
    engine = fast_reader.create_source_engine(source_url)
    since = {"since": dt.datetime(2000, 1, 1), "max_id": 0}
    try:
        with engine.connect() as conn:
            for table in CONTENT_TABLES:
                where, params = (
                    ("updated_at >= :since OR updated_at IS NULL OR id > :max_id", since)
                    if table.strategy == "merge"
                    else (None, None)
                )
                fast = list(
                    fast_reader.read_batches(
                        source_url, table, where, params, 50, on_fallback=_no_fallback
                    )
                )
                robust = list(robust_read_batches(conn, table, where, params, 50))
                assert all(isinstance(b, pa.Table) for b in fast), table.name
                staged = _staged(fast, table)
                assert staged[0], table.name
                assert staged == _staged(robust, table), table.name
    finally:
        engine.dispose()


@pytest.mark.mysql
def test_mysql_timestamps_are_read_in_a_utc_session(mariadb_url, monkeypatch):
    """MySQL converts TIMESTAMP to the session's zone and connectorx returns what it is sent."""
    write_source(mariadb_url, varied_ledger("mysql"))
    utc = _rows(
        fast_reader.read_batches(
            mariadb_url, CREDIT_HISTORIES, WHERE, PARAMS, on_fallback=_no_fallback
        )
    )
    assert utc[0]["created_at"] == ts(0, 1)
    monkeypatch.setitem(fast_reader.UTC_SESSION, "mysql", ["SET time_zone = '+05:00'"])
    shifted = _rows(
        fast_reader.read_batches(
            mariadb_url, CREDIT_HISTORIES, WHERE, PARAMS, on_fallback=_no_fallback
        )
    )
    assert shifted[0]["created_at"] == ts(0, 1) + dt.timedelta(
        hours=5
    )  # so the UTC statement is load-bearing


# -- literal rendering: connectorx takes no bound parameters --------------------------------------


def test_datetime_and_int_parameters_render_as_typed_literals():
    sql = fast_reader.render_sql(
        "mysql",
        CREDIT_HISTORIES,
        "created_at >= :start AND id > :after",
        {"start": dt.datetime(2025, 1, 2, 3, 4, 5), "after": 41},
    )
    assert sql.endswith("WHERE created_at >= '2025-01-02 03:04:05' AND id > 41 ORDER BY id")
    assert sql.startswith(
        "SELECT id, user_id, credit_events_id, "
    )  # the contract's columns, by name
    pg = fast_reader.render_sql(
        "postgresql", CREDIT_HISTORIES, "created_at < :end", {"end": dt.datetime(2025, 1, 3)}
    )
    assert "created_at < '2025-01-03 00:00:00'" in pg and '"id"' not in pg


def test_rendering_is_injection_safe_and_refuses_what_it_cannot_render():
    hostile = "x' OR '1'='1'; DROP TABLE users; -- \\"
    sql = fast_reader.render_sql("mysql", CREDIT_HISTORIES, "label = :label", {"label": hostile})
    assert "label = 'x'' OR ''1''=''1''; DROP TABLE users; -- \\\\' ORDER BY id" in sql
    assert "100%" in fast_reader.render_sql(
        "mysql", CREDIT_HISTORIES, "label <> '100%' AND id > :n", {"n": 1}
    )
    with pytest.raises(TypeError):
        fast_reader.render_sql("mysql", CREDIT_HISTORIES, "id > :n", {"n": None})
    with pytest.raises(TypeError):
        fast_reader.render_sql("mysql", CREDIT_HISTORIES, "id > :n", {"n": object()})
    with pytest.raises(TypeError):  # aware datetimes would be rendered in their own zone
        fast_reader.render_sql(
            "mysql",
            CREDIT_HISTORIES,
            "created_at > :t",
            {"t": dt.datetime(2025, 1, 1, tzinfo=dt.UTC)},
        )
    with pytest.raises(KeyError):
        fast_reader.render_sql("mysql", CREDIT_HISTORIES, "id > :missing", {})


@pytest.mark.mysql
def test_a_hostile_string_parameter_is_only_a_value_on_the_server(mariadb_url):
    write_source(mariadb_url, varied_ledger("mysql"))
    hostile = "x' OR '1'='1"
    rows = _rows(
        fast_reader.read_batches(
            mariadb_url,
            CREDIT_HISTORIES,
            "label = :label",
            {"label": hostile},
            on_fallback=_no_fallback,
        )
    )
    assert rows == []
    real = "O'Reilly \\ 100% ; --"
    rows = _rows(
        fast_reader.read_batches(
            mariadb_url, CREDIT_HISTORIES, "description = :d", {"d": real}, on_fallback=_no_fallback
        )
    )
    assert [r["id"] for r in rows] == [2**40 + 1]


def test_connectorx_urls_are_translated_and_never_logged():
    assert (
        fast_reader.connectorx_url("mysql+pymysql://u:s3cret@db:3306/syllaby_v2")
        == "mysql://u:s3cret@db:3306/syllaby_v2"
    )
    assert (
        fast_reader.connectorx_url("postgresql+psycopg://u:s3cret@db/s")
        == "postgresql://u:s3cret@db/s"
    )
    assert fast_reader.connectorx_url("mariadb+pymysql://u@db/s") == "mysql://u@db/s"
    assert not fast_reader.supports("sqlite:///x.sqlite")
    reason = fast_reader._fallback_reason(
        "mysql+pymysql://u:s3cret@db/s",
        CREDIT_HISTORIES,
        RuntimeError("cannot connect to mysql://u:s3cret@db/s"),
        9,
    )
    assert "s3cret" not in reason and "after id 9" in reason


# -- the fallback to SQLAlchemy -------------------------------------------------------------------


class _Panic(BaseException):
    """Like pyo3's PanicException: a Rust panic surfaces as a BaseException, not an Exception."""


@pytest.mark.mysql
def test_falls_back_to_sqlalchemy_when_connectorx_fails_to_start(mariadb_url, monkeypatch):
    write_source(mariadb_url, varied_ledger("mysql"))

    def broken(*args, **kwargs):
        raise RuntimeError("Cannot convert '0000-00-00 00:00:00' to NaiveDateTime")

    monkeypatch.setattr(fast_reader, "_stream", broken)
    reasons: list[str] = []
    batches = list(
        fast_reader.read_batches(
            mariadb_url, CREDIT_HISTORIES, WHERE, PARAMS, SMALL_BATCH, on_fallback=reasons.append
        )
    )
    assert len(reasons) == 1 and "from the start" in reasons[0] and "0000-00-00" in reasons[0]
    assert all(isinstance(b, pd.DataFrame) for b in batches)
    assert _as_python(_rows(batches)) == _as_python(_rows(_robust(mariadb_url)))


@pytest.mark.mysql
def test_a_failure_mid_stream_resumes_after_the_last_delivered_id(mariadb_url, monkeypatch):
    write_source(mariadb_url, varied_ledger("mysql"))
    real_stream = fast_reader._stream

    def fails_after_first_batch(*args, **kwargs):
        reader = real_stream(*args, **kwargs)

        def batches():
            yield reader.read_next_batch()
            raise _Panic("called `Option::unwrap()` on a `None` value")

        return pa.RecordBatchReader.from_batches(reader.schema, batches())

    monkeypatch.setattr(fast_reader, "_stream", fails_after_first_batch)
    reasons: list[str] = []
    batches = list(
        fast_reader.read_batches(
            mariadb_url, CREDIT_HISTORIES, WHERE, PARAMS, SMALL_BATCH, on_fallback=reasons.append
        )
    )
    assert [type(b) for b in batches][:1] == [pa.Table] and all(
        isinstance(b, pd.DataFrame) for b in batches[1:]
    )
    assert len(reasons) == 1 and "after id 2" in reasons[0]
    # nothing lost, nothing read twice
    assert _as_python(_rows(batches)) == _as_python(_rows(_robust(mariadb_url)))
    assert _staged(batches) == _staged(_robust(mariadb_url))


def test_sqlite_takes_the_robust_path(tmp_path):
    url = f"sqlite:///{tmp_path / 'syllaby_v2.sqlite'}"
    write_source(url, varied_ledger("sqlite"))
    batches = list(
        fast_reader.read_batches(
            url, CREDIT_HISTORIES, WHERE, PARAMS, SMALL_BATCH, on_fallback=_no_fallback
        )
    )
    assert all(isinstance(b, pd.DataFrame) for b in batches)
    assert [r["id"] for r in _rows(batches)] == [1, 2, 3, 2**40, 2**40 + 1]


@pytest.mark.mysql
def test_chunked_queries_read_every_row_once(mariadb_url, monkeypatch):
    """connectorx buffers a whole result ahead, so reads are split into `id > last LIMIT n`
    queries."""
    write_source(mariadb_url, varied_ledger("mysql"))
    monkeypatch.setattr(fast_reader, "CHUNK_BATCHES", 1)  # two-row queries over five rows
    batches = list(
        fast_reader.read_batches(
            mariadb_url, CREDIT_HISTORIES, WHERE, PARAMS, SMALL_BATCH, on_fallback=_no_fallback
        )
    )
    assert [b.num_rows for b in batches] == [2, 2, 1]
    assert _typed(_rows(batches)) == _typed(_as_python(_rows(_robust(mariadb_url))))
