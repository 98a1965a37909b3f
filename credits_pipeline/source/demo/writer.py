"""Bulk writers that load generated rows into SQLite, MariaDB/MySQL or PostgreSQL fast.

A demo database of 100,000 users holds millions of ledger rows; row-by-row ORM inserts would take
hours. Each dialect gets its fastest ordinary path: SQLite `executemany` inside one transaction with
the journal off, PyMySQL's `executemany` (which batches into multi-row `INSERT ... VALUES`), and
PostgreSQL `COPY ... FROM STDIN`. Rows arrive as tuples in the contract's column order with ids
already assigned, so every backend receives byte-identical content.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def column_names(table: str) -> list[str]:
    return [c.name for c in TABLES_BY_NAME[table].columns]


class BulkWriter:
    """Creates the contract tables at `engine` and appends rows to them in large batches."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.family = dialect_family(engine)
        create_tables(engine, with_foreign_keys=False)
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
        self.counts: dict[str, int] = {t.name: 0 for t in TABLES}

    def _insert_sql(self, table: str) -> str:
        sql = self._sql.get(table)
        if sql is None:
            cols = column_names(table)
            mark = "?" if self.family == SQLITE else "%s"
            sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join([mark] * len(cols))})"
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
        else:
            self._cur.executemany(self._insert_sql(table), rows)
        self._raw.commit()
        self.counts[table] += len(rows)

    def close(self) -> None:
        """Finish the load: realign PostgreSQL id sequences after explicit ids, release the
        connection."""
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
