"""Bulk writers that load generated rows into SQLite, MariaDB/MySQL or PostgreSQL fast.

A demo database of 100,000 users holds millions of ledger rows; row-by-row ORM inserts would take
hours. Each dialect gets its fastest ordinary path: SQLite `executemany` inside one transaction with
the journal off, MySQL/MariaDB `LOAD DATA LOCAL INFILE` from a temporary TSV file (falling back to
PyMySQL's `executemany`, which batches into multi-row `INSERT ... VALUES`, when the server refuses
local files), and PostgreSQL `COPY ... FROM STDIN`. Rows arrive as tuples in the contract's column
order with ids already assigned, so every backend receives byte-identical content.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa

from credits_pipeline.source.schema import create_tables
from credits_pipeline.source.tables import TABLES, TABLES_BY_NAME

SQLITE = "sqlite"
MYSQL = "mysql"
POSTGRES = "postgresql"


def dialect_family(engine: sa.Engine) -> str:
    """'sqlite', 'mysql' (MySQL and MariaDB) or 'postgresql'."""
    name = engine.dialect.name
    if name in ("mysql", "mariadb"):
        return MYSQL
    if name in (SQLITE, POSTGRES):
        return name
    raise ValueError(f"the demo generator does not support the {name!r} dialect")


def make_engine(url: str) -> sa.Engine:
    """An engine for `url`; PyMySQL connections may send local files (for LOAD DATA)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() in ("mysql", "mariadb") and parsed.get_driver_name() == "pymysql":
        return sa.create_engine(url, connect_args={"local_infile": True})
    return sa.create_engine(url)


def _tsv_field(value) -> str:
    """One value in MySQL's default LOAD DATA text format (NULL as \\N, backslash escapes)."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        if "\\" in value or "\t" in value or "\n" in value:
            value = value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
        return value
    return repr(value) if isinstance(value, float) else str(value)


def contract_rows_present(engine: sa.Engine) -> dict[str, int]:
    """Rows held by each contract table that exists at `engine` and is not empty.

    Why: writing the demo drops and recreates the contract tables, so the generator must know
    what it would destroy before it touches anything (a real `syllaby_v2` must never be wiped by
    a mistyped URL). Table names come from the contract, quoted by the dialect.
    """
    present = {name.lower() for name in sa.inspect(engine).get_table_names()}
    counts: dict[str, int] = {}
    with engine.connect() as conn:
        quote = conn.dialect.identifier_preparer.quote
        for table in TABLES:
            if table.name.lower() in present:
                n = conn.execute(sa.text(f"SELECT COUNT(*) FROM {quote(table.name)}")).scalar_one()
                if n:
                    counts[table.name] = int(n)
    return counts


def column_names(table: str) -> list[str]:
    return [c.name for c in TABLES_BY_NAME[table].columns]


class BulkWriter:
    """Creates the contract tables at `engine` and appends rows to them in large batches."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.family = dialect_family(engine)
        metadata = create_tables(engine, with_foreign_keys=False)
        # Secondary indexes are built once after the load: maintaining them row by row in random
        # key order is what makes bulk loads slow on every engine.
        self._indexes = [ix for t in metadata.sorted_tables for ix in sorted(t.indexes, key=str)]
        for index in self._indexes:
            index.drop(engine)
        self._raw = engine.raw_connection()
        self._cur = self._raw.cursor()
        if self.family == SQLITE:
            self._cur.execute("PRAGMA synchronous = OFF")
            self._cur.execute("PRAGMA journal_mode = MEMORY")
        elif self.family == MYSQL:
            self._cur.execute("SET time_zone = '+00:00'")
            self._cur.execute("SET unique_checks = 0")
            self._cur.execute("SET foreign_key_checks = 0")
        self._sql: dict[str, str] = {}
        self._load_data = self.family == MYSQL
        self._tmpdir = tempfile.TemporaryDirectory(prefix="demo_load_")
        self.counts: dict[str, int] = {t.name: 0 for t in TABLES}

    def _insert_sql(self, table: str) -> str:
        sql = self._sql.get(table)
        if sql is None:
            cols = column_names(table)
            mark = "?" if self.family == SQLITE else "%s"
            marks = ", ".join([mark] * len(cols))
            sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})"
            self._sql[table] = sql
        return sql

    def write(self, table: str, rows: Sequence[tuple]) -> None:
        """Append `rows` (tuples in contract column order) to `table` and commit."""
        if not rows:
            return
        if self.family == POSTGRES:
            cols = ", ".join(column_names(table))
            with self._cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        elif self._load_data and self._try_load_data(table, rows):
            pass
        else:
            self._cur.executemany(self._insert_sql(table), rows)
        self._raw.commit()
        self.counts[table] += len(rows)

    def _try_load_data(self, table: str, rows: Sequence[tuple]) -> bool:
        """Bulk-load `rows` with LOAD DATA LOCAL INFILE; False (and never again) if refused."""
        path = Path(self._tmpdir.name) / f"{table}.tsv"
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write("".join("\t".join(map(_tsv_field, row)) + "\n" for row in rows))
        sql = (
            f"LOAD DATA LOCAL INFILE %s INTO TABLE {table} CHARACTER SET utf8mb4 "
            f"FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' "
            f"({', '.join(column_names(table))})"
        )
        try:
            self._cur.execute(sql, (str(path),))
        except Exception as exc:  # local_infile disabled on the server or the client
            if getattr(exc, "args", (None,))[0] not in (1148, 3948, 2068):
                raise
            self._raw.rollback()
            self._load_data = False
            return False
        if self._cur.rowcount != len(rows):  # LOCAL turns rejected rows into mere warnings
            raise RuntimeError(
                f"LOAD DATA wrote {self._cur.rowcount} of {len(rows)} rows into {table}"
            )
        return True

    def close(self) -> None:
        """Finish the load: realign PostgreSQL id sequences after explicit ids, release the
        connection, build the secondary indexes."""
        try:
            if self.family == POSTGRES:
                for table in TABLES:
                    self._cur.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                        f"COALESCE((SELECT MAX(id) FROM {table.name}), 0) + 1, false)"
                    )
                self._raw.commit()
            elif self.family == SQLITE:
                self._raw.commit()
        finally:
            self._cur.close()
            self._raw.close()
            self._tmpdir.cleanup()
        for index in self._indexes:
            index.create(self.engine)
