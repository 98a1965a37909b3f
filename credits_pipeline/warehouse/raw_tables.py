"""Landing extracted rows in the warehouse's `raw` tables: staged first, then swapped in one
transaction, on DuckDB and on BigQuery alike.

Batches are appended to a staging table as they arrive (bounded memory, committed as they go);
only when the whole read has succeeded does one transaction replace exactly the target's slice —
a range of ledger partitions, the ids of a merge, or the whole table — together with its
quarantine rows and bookkeeping. A crash while reading or loading therefore leaves the previous
`raw` state untouched, and re-running the same slice yields the same rows (idempotent). Duplicate
ids across batches or against rows outside the slice are caught here, where both are visible, and
quarantined with a reason like any other unloadable row.

`Stager` is written once, its SQL in DuckDB's dialect (the BigQuery session translates it); how a
batch gets into a staging table and how the raw tables are laid out differ per engine and are asked
of a `StagingEngine` (DuckDB's in `duckdb_warehouse.py`, BigQuery's in `bigquery_raw_tables.py`),
which `session.stager` picks.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from credits_pipeline.ledger_fingerprint import DayFingerprint, StoredFingerprint
from credits_pipeline.names import (
    CUTOFF_TABLE,
    OPEN_LEDGER_TABLE,
    RAW_PREFIX,
    STAGING_SCHEMA,
    rejected_name,
)
from credits_pipeline.source.column_types import types_by_kind
from credits_pipeline.source.tables import CREDIT_HISTORIES, Table
from credits_pipeline.validation.outcome import FAILED_COLUMN, REASON_COLUMN, ValidatedBatch
from credits_pipeline.warehouse.interface import Session
from credits_pipeline.warehouse.shrink_guard import guard_replacement

DUCKDB_TYPES = types_by_kind(lambda t: t.duckdb)  # kind -> DuckDB DDL type (column_types.py)
PARTITION_COLUMN = "_partition"
LEDGER_PARTITIONS = "raw._ledger_partitions"
LEDGER_FINGERPRINTS = "raw._ledger_fingerprints"
# One row: the definition the stored fingerprints were taken with (extract/fingerprint.DEFINITION).
LEDGER_FINGERPRINT_DEFINITION = "raw._ledger_fingerprint_definition"
LEDGER_FULL_CHECKS = "raw._ledger_full_checks"  # cuts that compared every closed day
DAYS_PER_INSERT = 400  # rows of a per-day bookkeeping table per parametrized insert (<= 6 each)
WATERMARKS = "raw._watermarks"
CUTOFF_RELATION = f"{RAW_PREFIX}.{CUTOFF_TABLE}"
OPEN_PARTITION_LABEL = "open"
WHOLE_TABLE_LABEL = "whole"


_PLACEHOLDER = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)")


def positional(sql: str, params: Mapping[str, object]) -> tuple[str, list[object]]:
    """SQL with `:name` placeholders (as the source reads take it) as `?` placeholders and their
    values in order, as the warehouse sessions bind them."""
    values: list[object] = []

    def mark(match: re.Match) -> str:
        values.append(params[match.group(1)])
        return "?"

    return _PLACEHOLDER.sub(mark, sql), values


def column_types(table: Table) -> list[tuple[str, str]]:
    return [(c.name, DUCKDB_TYPES[c.kind]) for c in table.extracted_columns]


def raw_columns_ddl(table: Table, with_partition: bool) -> str:
    """The table's columns at DuckDB's types, as a DuckDB `create table` lists them (the BigQuery
    session translates the types)."""
    cols = [f"{name} {typ}" for name, typ in column_types(table)]
    if with_partition:
        cols.append(f"{PARTITION_COLUMN} DATE")
    return ", ".join(cols)


def _rejected_columns_ddl(table: Table) -> str:
    cols = [f"{c.name} VARCHAR" for c in table.extracted_columns]
    cols += [f"{FAILED_COLUMN} VARCHAR", f"{REASON_COLUMN} VARCHAR", f"{PARTITION_COLUMN} VARCHAR"]
    return ", ".join(cols)


def _rejected_columns(table: Table) -> str:
    """The quarantine's columns by name: staging may hold more (BigQuery's arrival order)."""
    return ", ".join([*table.extracted_names, FAILED_COLUMN, REASON_COLUMN, PARTITION_COLUMN])


def ensure_raw_tables(con: Session, table: Table) -> None:
    """Create `raw.<table>`, its quarantine and (for the ledger) its open slice and bookkeeping."""
    is_ledger = table is CREDIT_HISTORIES
    con.execute(
        f"create table if not exists raw.{table.name} ({raw_columns_ddl(table, is_ledger)})"
    )
    con.execute(
        f"create table if not exists raw.{rejected_name(table.name)} "
        f"({_rejected_columns_ddl(table)})"
    )
    if is_ledger:
        con.execute(
            f"create table if not exists raw.{OPEN_LEDGER_TABLE} ({raw_columns_ddl(table, True)})"
        )
        con.execute(
            f"create table if not exists {LEDGER_PARTITIONS} "
            "(partition_date DATE primary key, loaded_rows BIGINT, rejected_rows BIGINT)"
        )
        con.execute(
            f"create table if not exists {LEDGER_FINGERPRINTS} (partition_date DATE, through_id "
            "BIGINT, row_count BIGINT, id_sum BIGINT, user_id_sum BIGINT, digest BIGINT)"
        )
        con.execute(
            f"create table if not exists {LEDGER_FINGERPRINT_DEFINITION} (definition VARCHAR)"
        )
        con.execute(
            f"create table if not exists {LEDGER_FULL_CHECKS} "
            "(checked_at TIMESTAMP, through_id BIGINT)"
        )
    con.execute(
        f"create table if not exists {WATERMARKS} "
        "(table_name VARCHAR primary key, updated_at TIMESTAMP, max_id BIGINT)"
    )
    con.execute(
        f"create table if not exists {CUTOFF_RELATION} "
        "(cutoff_at TIMESTAMP, ledger_closed_before TIMESTAMP, ledger_closed_max_id BIGINT)"
    )


@dataclass
class StageStats:
    loaded: int = 0
    rejected: int = 0


class StagingEngine(Protocol):
    """The few staging steps whose code differs per engine; the rest of `Stager` is SQL, once.

    DuckDB's (`duckdb_warehouse.DuckDBStaging`) scans pandas and Arrow batches in process and
    numbers staged rows by its `rowid`; BigQuery's (`bigquery_raw_tables.BigQueryStaging`) sends
    typed Arrow by load jobs, numbering the rows itself in a `_seq` column, and creates the ledger
    partitioned by day. `session.stager` pairs a session with its engine's steps.
    """

    # The column numbering staged rows as they arrived: the first copy of a duplicate id wins.
    arrival_order: str

    def ensure_raw_tables(self, table: Table) -> None:
        """`raw.<table>`, its quarantine and bookkeeping (`ensure_raw_tables`), at the engine's
        layout."""
        ...

    def create_stage(self, stage: str, table: Table) -> None:
        """An empty `stage` for the table's clean rows (and the engine's arrival column)."""
        ...

    def append_clean(self, stage: str, table: Table, clean: pa.Table | pd.DataFrame) -> None:
        """Append validated rows (the table's extracted columns) to `stage`, at their types."""
        ...

    def append_rejected(self, stage: str, rejected: pd.DataFrame) -> None:
        """Append quarantine rows (text columns, None for NULL) to `stage`, column by column."""
        ...

    def timestamp_text(self, column: str) -> str:
        """SQL for a staged timestamp as a quarantine row writes it (as the engine always has)."""
        ...

    def drop_stage(self, *relations: str) -> None:
        """Drop swapped staging tables, where the engine allows DDL at that point."""
        ...


class Stager:
    """Appends validated batches to `_staging.<target>` and swaps them into `raw` atomically.

    One class for both engines: the swaps, the duplicate quarantine and the shrink guards are SQL
    in DuckDB's dialect (the BigQuery session translates it); putting rows into staging is asked of
    `staging`, the engine's `StagingEngine`. Each swap runs in one transaction of its own, or in the
    caller's (`in_transaction`) when several must commit together; `session.py` says what a
    transaction means on each engine.
    """

    def __init__(
        self, con: Session, staging: StagingEngine, table: Table, target: str | None = None
    ):
        self.con = con
        self.staging = staging
        self.table = table
        self.target = target or table.name
        self.stage = f"{STAGING_SCHEMA}.{self.target}"
        self.stage_rejected = f"{STAGING_SCHEMA}.{rejected_name(self.target)}"
        self.stats = StageStats()
        self._ids_ascending = True  # every clean row staged so far came in ascending id order
        self._last_id: int | None = None
        staging.ensure_raw_tables(table)
        staging.create_stage(self.stage, table)
        con.execute(
            f"create or replace table {self.stage_rejected} ({_rejected_columns_ddl(table)})"
        )

    def append(self, batch: ValidatedBatch, partition_label: str | None = None) -> None:
        """Stage a validated batch: its clean rows (pandas, or Arrow from the fast reader) and its
        quarantine rows."""
        clean = batch.clean
        rows = clean.num_rows if isinstance(clean, pa.Table) else len(clean)
        if rows:
            ids = (
                clean.column("id")
                if isinstance(clean, pa.Table)
                else pa.chunked_array([pa.array(clean["id"], type=pa.int64())])
            )
            self._note_id_order(ids)
            self.staging.append_clean(self.stage, self.table, clean)
        self._append_rejected(batch, partition_label)
        self.stats.loaded += rows
        self.stats.rejected += len(batch.rejected)

    # The fast reader's Arrow batches take the same path; the engine scans them as they are.
    append_arrow = append

    def restart(self) -> None:
        """Empty the stage and its quarantine, as if nothing had been staged."""
        self.staging.create_stage(self.stage, self.table)
        self.con.execute(
            f"create or replace table {self.stage_rejected} ({_rejected_columns_ddl(self.table)})"
        )
        self.stats = StageStats()
        self._ids_ascending, self._last_id = True, None

    def keep_only(self, where: str, params: Mapping[str, object]) -> int:
        """Drop the staged rows outside `where` (SQL with `:name` placeholders); return how many.

        Why: the consistent cut's recent check stages a superset of its rows in one read and
        narrows it here once it knows which rows it needs (`extract/cut_scope.RecentRead`). Only
        clean rows can be narrowed: a quarantined row's values are text, which the WHERE does not
        compare as the source did, so a stage holding any is refused.
        """
        if self.stats.rejected:
            raise ValueError(f"{self.stage}: cannot narrow a stage holding quarantined rows")
        sql, values = positional(where, params)
        outside = f"not coalesce(({sql}), false)"
        dropped = int(
            self.con.execute(
                f"select count(*) from {self.stage} where {outside}", values
            ).fetchone()[0]
        )
        if dropped:
            self.con.execute(f"delete from {self.stage} where {outside}", values)
            self.stats.loaded -= dropped
        return dropped

    def _note_id_order(self, ids: pa.ChunkedArray) -> None:
        """Track whether every staged row so far arrived in ascending id order (see
        `_order_by_id`)."""
        if not self._ids_ascending or ids.null_count:
            self._ids_ascending = False
            return
        values = ids.combine_chunks()
        first, last = values[0].as_py(), values[-1].as_py()
        ascending = len(values) < 2 or pc.all(pc.greater(values[1:], values[:-1])).as_py()
        if not ascending or (self._last_id is not None and first <= self._last_id):
            self._ids_ascending = False
        self._last_id = last

    def _order_by_id(self) -> str:
        """`order by id` for copying the stage into `raw`, unless the stage is in id order already.

        The fast reader stages the ledger in id order (`ORDER BY id`, batch after batch), and DuckDB
        keeps insertion order on a plain `insert ... select`, so sorting millions of rows again
        would only cost time and memory for the same result. Any pandas batch makes the order
        unknown.
        """
        return "" if self._ids_ascending else " order by id"

    def _append_rejected(self, batch: ValidatedBatch, partition_label: str | None) -> None:
        if not len(batch.rejected):
            return
        names = self.table.extracted_names
        rejected = batch.rejected[[*names, FAILED_COLUMN, REASON_COLUMN]].copy()
        rejected[PARTITION_COLUMN] = rejected_partition_labels(
            self.table, self.target, rejected, partition_label
        )
        rejected = rejected.astype(object).where(rejected.notna(), None)
        self.staging.append_rejected(self.stage_rejected, rejected)

    # -- duplicates across batches and against rows outside the replaced slice ----------------

    def _quarantine_duplicates(
        self,
        kept_elsewhere_sql: str | None,
        label_sql: str,
        kept_params: list | None = None,
        label_params: list | None = None,
    ) -> int:
        """Move staged rows whose id repeats (within staging, or in rows the swap keeps) to
        quarantine."""
        order = self.staging.arrival_order
        as_text = ", ".join(
            self.staging.timestamp_text(c.name) if c.kind == "ts" else f"cast({c.name} as varchar)"
            for c in self.table.extracted_columns
        )
        elsewhere = f" or id in ({kept_elsewhere_sql})" if kept_elsewhere_sql else ""
        self.con.execute(
            f"""
            create or replace temp table _dups as
            select {order} as seq from (
                select {order}, id,
                    row_number() over (partition by id order by {order}) as copy_number
                from {self.stage}
            ) where copy_number > 1{elsewhere}
            """,
            kept_params or [],
        )
        moved = int(self.con.execute("select count(*) from _dups").fetchone()[0])
        if moved:
            self.con.execute(
                f"""
                insert into {self.stage_rejected} ({_rejected_columns(self.table)})
                select {as_text}, 'id', 'id: duplicate primary key ' || cast(id as varchar)
                       || ' (already loaded, or a later copy in this extraction)', {label_sql}
                from {self.stage} where {order} in (select seq from _dups)
                """,
                label_params or [],
            )
            self.con.execute(f"delete from {self.stage} where {order} in (select seq from _dups)")
            self.stats.loaded -= moved
            self.stats.rejected += moved
        self.con.execute("drop table if exists _dups")
        return moved

    def _insert_rejected(self, delete_where: str, params: list | None = None) -> None:
        target = f"raw.{rejected_name(self.table.name)}"
        columns = _rejected_columns(self.table)
        self.con.execute(f"delete from {target} where {delete_where}", params or [])
        self.con.execute(
            f"insert into {target} ({columns}) select {columns} from {self.stage_rejected}"
        )

    @contextlib.contextmanager
    def _transaction(self, external: bool) -> Iterator[None]:
        """Own a transaction, or join the caller's when several swaps must commit together."""
        if external:
            yield
            return
        self.con.execute("begin transaction")
        try:
            yield
        except BaseException:
            self.con.execute("rollback")
            raise
        self.con.execute("commit")

    def _guard_shrink(self, relation: str, before_sql: str, params: list) -> None:
        """The shrink guard (`shrink_guard.py`): refuse, before any delete, a far smaller slice."""
        before = self.con.execute(before_sql, params).fetchone()[0]
        after = self.con.execute(f"select count(*) from {self.stage}").fetchone()[0]
        guard_replacement(relation, self.table.name, int(before), int(after))

    def _guard_whole_replacement(self) -> None:
        """A whole table; the open ledger slice is judged by `fold_closed_ledger_rows` instead.

        The open slice alone shrinks every day by design (yesterday's open day moves into a closed
        partition), and the cut rewrites closed days before it swaps the slice: so the slice is
        measured as part of the whole ledger, before and after the fold (`guard_whole_ledger`).
        """
        if self.target != OPEN_LEDGER_TABLE:
            self._guard_shrink(f"raw.{self.target}", f"select count(*) from raw.{self.target}", [])

    def _drop_stage(self) -> None:
        self.staging.drop_stage(self.stage, self.stage_rejected)

    # -- the three ways a slice is swapped in --------------------------------------------------

    def swap_ledger_range(self, start: dt.date, end: dt.date) -> dict[dt.date, int]:
        """Replace ledger partitions [start, end) (days) with the staged rows, in one
        transaction."""
        keys = [start + dt.timedelta(days=i) for i in range((end - start).days)]
        con = self.con
        ledger = f"raw.{self.table.name}"
        names = ", ".join(self.table.extracted_names)
        in_range = f"{PARTITION_COLUMN} >= ? and {PARTITION_COLUMN} < ?"
        with self._transaction(external=False):
            # Against rows kept outside the range only ids within the staged id range can collide:
            # BigQuery clusters the ledger by id, so this reads a few blocks, not the history.
            self._quarantine_duplicates(
                f"select id from {ledger} where ({PARTITION_COLUMN} < ? or {PARTITION_COLUMN} >= ? "
                f"or {PARTITION_COLUMN} is null) and id between (select min(id) from {self.stage}) "
                f"and (select max(id) from {self.stage})",
                "coalesce(strftime(created_at, '%Y-%m-%d'), ?)",
                kept_params=[start, end],
                label_params=[start.isoformat()],
            )
            self._guard_shrink(
                f"{ledger} for [{start}, {end})",
                f"select count(*) from {ledger} where {in_range}",
                [start, end],
            )
            con.execute(f"delete from {ledger} where {in_range}", [start, end])
            con.execute(
                f"insert into {ledger} ({names}, {PARTITION_COLUMN}) select {names}, "
                f"cast(created_at as date) from {self.stage}{self._order_by_id()}"
            )
            self._insert_rejected(in_range, [start.isoformat(), end.isoformat()])
            counts = dict(
                con.execute(
                    f"select cast(created_at as date), count(*) from {self.stage} group by 1"
                ).fetchall()
            )
            rejected = dict(
                con.execute(
                    f"select try_cast({PARTITION_COLUMN} as date), count(*) from "
                    f"{self.stage_rejected} group by 1"
                ).fetchall()
            )
            con.execute(
                f"delete from {LEDGER_PARTITIONS} where partition_date >= ? and partition_date < ?",
                [start, end],
            )
            insert_day_rows(
                con,
                LEDGER_PARTITIONS,
                ("partition_date", "loaded_rows", "rejected_rows"),
                [[k, int(counts.get(k, 0)), int(rejected.get(k, 0))] for k in keys],
            )
        self._drop_stage()
        return {k: int(counts.get(k, 0)) for k in keys}

    def merge_by_id(
        self, watermark: tuple[dt.datetime | None, int | None] | None, in_transaction: bool = False
    ) -> None:
        """Upsert the staged rows by id (and their quarantine rows), then move the watermark."""
        con = self.con
        target = f"raw.{self.target}"
        names = ", ".join(self.table.extracted_names)
        with self._transaction(in_transaction):
            self._quarantine_duplicates(None, "?", label_params=[WHOLE_TABLE_LABEL])
            con.execute(f"delete from {target} where id in (select id from {self.stage})")
            con.execute(
                f"insert into {target} ({names}) select {names} from {self.stage} order by id"
            )
            self._insert_rejected(
                f"id in (select id from {self.stage_rejected}) or id in (select cast(id as "
                f"varchar) from {self.stage})"
            )
            if watermark is not None:
                con.execute(f"delete from {WATERMARKS} where table_name = ?", [self.target])
                con.execute(
                    f"insert into {WATERMARKS} (table_name, updated_at, max_id) values (?, ?, ?)",
                    [self.target, *watermark],
                )
        self._drop_stage()

    def replace_whole(
        self, partition_label: str = WHOLE_TABLE_LABEL, in_transaction: bool = False
    ) -> None:
        """Replace the whole target (and its quarantine rows of this label) in one transaction."""
        con = self.con
        target = f"raw.{self.target}"
        names = ", ".join(self.table.extracted_names)
        is_open = self.target == OPEN_LEDGER_TABLE
        columns = f"{names}, {PARTITION_COLUMN}" if is_open else names
        select = f"{names}, cast(created_at as date)" if is_open else names
        with self._transaction(in_transaction):
            self._quarantine_duplicates(None, "?", label_params=[partition_label])
            self._guard_whole_replacement()
            con.execute(f"delete from {target}")
            con.execute(
                f"insert into {target} ({columns}) select {select} from {self.stage} order by id"
            )
            self._insert_rejected(f"{PARTITION_COLUMN} = ?", [partition_label])
        self._drop_stage()


def rejected_partition_labels(
    table: Table, target: str, rejected: pd.DataFrame, fallback: str | None
) -> list[str | None]:
    """The partition a quarantined row belongs to: its own UTC day for closed ledger rows.

    Labelling a rejected ledger row by the day of its `created_at` (not by the start of the range
    that happened to read it) keeps re-runs of narrower or wider ranges from quarantining the same
    row twice: each range replaces exactly the quarantine rows of its own days.
    """
    if (
        table is not CREDIT_HISTORIES
        or target != CREDIT_HISTORIES.name
        or "created_at" not in rejected
    ):
        return [fallback] * len(rejected)
    days = pd.to_datetime(rejected["created_at"], format="mixed", errors="coerce")
    return [fallback if pd.isna(d) else d.date().isoformat() for d in days]


def loaded_ledger_partitions(con: duckdb.DuckDBPyConnection) -> list[dt.date]:
    ensure_raw_tables(con, CREDIT_HISTORIES)
    return [
        r[0]
        for r in con.execute(
            f"select partition_date from {LEDGER_PARTITIONS} order by 1"
        ).fetchall()
    ]


def watermark(
    con: duckdb.DuckDBPyConnection, target: str
) -> tuple[dt.datetime | None, int | None] | None:
    row = con.execute(
        f"select updated_at, max_id from {WATERMARKS} where table_name = ?", [target]
    ).fetchone()
    return (row[0], row[1]) if row else None


def staged_watermark(
    con: duckdb.DuckDBPyConnection, stage: str
) -> tuple[dt.datetime | None, int | None]:
    row = con.execute(f"select max(updated_at), max(id) from {stage}").fetchone()
    return row[0], row[1]  # type: ignore[index]


def newest_rows_markdown(con: Any, relation: str, order_by: str, limit: int = 5) -> str:
    """A small Markdown preview of the newest rows (raw tables hold no personal data)."""
    frame: pd.DataFrame = con.execute(
        f"select * from {relation} order by {order_by} desc nulls last limit {int(limit)}"
    ).fetchdf()
    if frame.empty:
        return "_no rows_"
    return frame.to_markdown(index=False)


# -- closed-day fingerprints and the rows the consistent cut folds into closed days --------------


def closed_ledger_end(con, start: dt.date) -> dt.datetime:
    """T0: the end of the contiguous run of loaded partitions from `start` (the open day's start).

    Everything with `created_at` before T0 — the loaded partitions and the history before `start` —
    is a closed day; the open slice holds the days from T0 on.
    """
    day = start
    loaded = set(loaded_ledger_partitions(con))
    while day in loaded:
        day += dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time())


def _fingerprint_definition(con) -> str | None:
    return con.execute(f"select max(definition) from {LEDGER_FINGERPRINT_DEFINITION}").fetchone()[0]


def stored_ledger_fingerprints(con, definition: str) -> dict[dt.date, StoredFingerprint]:
    """Each closed day's fingerprint as the warehouse read it (see extract/fingerprint.py).

    Empty when they were taken with another `definition` than the caller computes (a warehouse
    from before the definition changed): compared with the new numbers every day would look
    changed, so every closed day is read once more instead, as a first read.
    """
    ensure_raw_tables(con, CREDIT_HISTORIES)
    if _fingerprint_definition(con) != definition:
        return {}
    rows = con.execute(
        "select partition_date, through_id, row_count, id_sum, user_id_sum, digest from "
        f"{LEDGER_FINGERPRINTS}"
    ).fetchall()
    out = {}
    for day, through, *values in rows:
        day = day if isinstance(day, dt.date) else dt.date.fromisoformat(str(day)[:10])
        out[day] = StoredFingerprint(int(through), DayFingerprint(*(int(v) for v in values)))
    return out


def replace_ledger_fingerprints(
    con,
    first: dt.date | None,
    end: dt.date,
    through_id: int,
    fingerprints: dict[dt.date, DayFingerprint],
    definition: str,
    unknown: Iterable[dt.date] = (),
) -> None:
    """Replace the stored fingerprints of days [first, end) (`first` None: every day before `end`).

    Days in `unknown` keep none (the read could not tell their numbers: a quarantined row,
    `extract/read_fingerprint.py`): the next cut reads them whole as days never read.

    `fingerprints` is the source's, taken at `through_id` before (or in the snapshot of) the read
    that loaded those days: a day absent from it is stored (empty) when it lies in a bounded range
    or is a loaded partition, so that a row appearing in it later is a change, not a first read,
    and the partition run and the cut store the same fingerprints. Fingerprints of another
    `definition` are dropped first: none of them is ever compared with the new numbers.
    """
    ensure_raw_tables(con, CREDIT_HISTORIES)
    if _fingerprint_definition(con) != definition:
        con.execute(f"delete from {LEDGER_FINGERPRINTS} where true")
        con.execute(f"delete from {LEDGER_FINGERPRINT_DEFINITION} where true")
        con.execute(f"insert into {LEDGER_FINGERPRINT_DEFINITION} values (?)", [definition])
    if first is None:
        con.execute(f"delete from {LEDGER_FINGERPRINTS} where partition_date < ?", [end])
        # loaded partitions without rows keep their empty fingerprint, as the partition run stored
        loaded = {d for d in loaded_ledger_partitions(con) if d < end}
        days = sorted(loaded | {d for d in fingerprints if d < end})
    else:
        con.execute(
            f"delete from {LEDGER_FINGERPRINTS} where partition_date >= ? and partition_date < ?",
            [first, end],
        )
        days = [first + dt.timedelta(days=i) for i in range((end - first).days)]
    rows = []
    skipped = set(unknown)
    for day in days:
        if day in skipped:
            continue
        fp = fingerprints.get(day, DayFingerprint())
        rows.append([day, int(through_id), fp.rows, fp.id_sum, fp.user_sum, fp.digest])
    insert_day_rows(
        con,
        LEDGER_FINGERPRINTS,
        ("partition_date", "through_id", "row_count", "id_sum", "user_id_sum", "digest"),
        rows,
    )


def last_full_check(con) -> dt.datetime | None:
    """The cut-off of the last cut that compared every closed day with the source (None: never)."""
    ensure_raw_tables(con, CREDIT_HISTORIES)
    value = con.execute(f"select max(checked_at) from {LEDGER_FULL_CHECKS}").fetchone()[0]
    return _naive(value)


def record_full_check(con, checked_at: dt.datetime, through_id: int) -> None:
    """Remember a full check (its cut-off and the snapshot's highest id), after its commit."""
    ensure_raw_tables(con, CREDIT_HISTORIES)
    con.execute(
        f"insert into {LEDGER_FULL_CHECKS} (checked_at, through_id) values (?, ?)",
        [checked_at, int(through_id)],
    )


def _naive(value) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value
    return dt.datetime.fromisoformat(str(value))


_REJECTED_ID = "try_cast(id as bigint)"
_REJECTED_CREATED_AT = "try_cast(created_at as timestamp)"


def closed_days_first_id(con, first: dt.date, end: dt.date) -> int | None:
    """The lowest id the warehouse holds (loaded or quarantined) for closed days [first, end).

    The recent check reads the source from it: every row of those days, as read, is at or above.
    """
    rejected = f"raw.{rejected_name(CREDIT_HISTORIES.name)}"
    value = con.execute(
        f"""
        select min(id) from (
            select min(id) as id from raw.{CREDIT_HISTORIES.name}
            where {PARTITION_COLUMN} >= ? and {PARTITION_COLUMN} < ?
            union all
            select min({_REJECTED_ID}) as id from {rejected}
            where {PARTITION_COLUMN} >= ? and {PARTITION_COLUMN} < ?
        ) as firsts
        """,
        [first, end, first.isoformat(), end.isoformat()],
    ).fetchone()[0]
    return None if value is None else int(value)


@dataclass(frozen=True)
class StoredCut:
    """What the last consistent cut read: its open slice held every row at or below `max_id`
    dated from `closed_before` on (or without a day)."""

    closed_before: dt.datetime
    max_id: int
    cutoff_at: dt.datetime


def stored_cut(con) -> StoredCut | None:
    """The last cut's end of the closed days, highest id and cut-off (None before the first)."""
    ensure_raw_tables(con, CREDIT_HISTORIES)
    row = con.execute(
        f"select ledger_closed_before, ledger_closed_max_id, cutoff_at from {CUTOFF_RELATION}"
    ).fetchone()
    if row is None or None in row:
        return None
    return StoredCut(_naive(row[0]), int(row[1]), _naive(row[2]))  # type: ignore[arg-type]


def first_id_created_between(con, since: dt.datetime, until: dt.datetime) -> int | None:
    """The lowest id the warehouse holds for a row created in [since, until] (None: no row).

    Why: ids are handed out at insert and rows become visible at commit, so a row inserted
    shortly before a cut may commit after it with an id below the cut's highest. Its id was
    handed out after those of the rows inserted before it in that window, which the cut did see.
    """
    value = con.execute(
        f"""
        select min(id) from (
            select min(id) as id from raw.{CREDIT_HISTORIES.name}
            where {PARTITION_COLUMN} >= ? and {PARTITION_COLUMN} <= ?
                and created_at >= ? and created_at <= ?
            union all
            select min(id) as id from raw.{OPEN_LEDGER_TABLE}
            where created_at >= ? and created_at <= ?
        ) as firsts
        """,
        [since.date(), until.date(), since, until, since, until],
    ).fetchone()[0]
    return None if value is None else int(value)


def open_rows_first_id(con, since: dt.datetime, until: dt.datetime | None = None) -> int | None:
    """The lowest id of the stored open slice (loaded or quarantined) dated in [since, until).

    Why the cut and the partition run may read the source from it: the last cut's open slice
    holds every row at or below its highest id dated from its `closed_before` on.
    """
    rejected = f"raw.{rejected_name(CREDIT_HISTORIES.name)}"
    upper = "" if until is None else " and created_at < ?"
    upper_rejected = "" if until is None else f" and {_REJECTED_CREATED_AT} < ?"
    params: list[object] = [since]
    if until is not None:
        params.append(until)
    value = con.execute(
        f"""
        select min(id) from (
            select min(id) as id from raw.{OPEN_LEDGER_TABLE} where created_at >= ?{upper}
            union all
            select min({_REJECTED_ID}) as id from {rejected}
            where {PARTITION_COLUMN} = ? and {_REJECTED_CREATED_AT} >= ?{upper_rejected}
        ) as firsts
        """,
        [*params, OPEN_PARTITION_LABEL, *params],
    ).fetchone()[0]
    return None if value is None else int(value)


def open_rows_without_day(con, below_id: int) -> list[int]:
    """Ids below `below_id` of stored open rows without a usable day (NULL or unreadable
    `created_at`): the cut lists them by id, as no id range covers them."""
    rejected = f"raw.{rejected_name(CREDIT_HISTORIES.name)}"
    rows = con.execute(
        f"""
        select id from raw.{OPEN_LEDGER_TABLE} where created_at is null and id < ?
        union
        select {_REJECTED_ID} from {rejected}
        where {PARTITION_COLUMN} = ? and {_REJECTED_CREATED_AT} is null and {_REJECTED_ID} < ?
        """,
        [below_id, OPEN_PARTITION_LABEL, below_id],
    ).fetchall()
    return sorted(int(r[0]) for r in rows if r[0] is not None)


def open_rows_below(con, below_id: int) -> list[int]:
    """Ids below `below_id` of every stored open row (loaded or quarantined), whatever its day.

    Why: a recent check's one read (`extract/cut_scope.RecentRead`) starts at the fingerprints'
    first id; the open rows the cut reads below it — NULL-dated, of the open day, of the future —
    were all in the last cut's open slice, so they are listed by id instead of widening the
    read's range down to them (a future-dated row can carry an old id)."""
    rejected = f"raw.{rejected_name(CREDIT_HISTORIES.name)}"
    rows = con.execute(
        f"""
        select id from raw.{OPEN_LEDGER_TABLE} where id < ?
        union
        select {_REJECTED_ID} from {rejected}
        where {PARTITION_COLUMN} = ? and {_REJECTED_ID} < ?
        """,
        [below_id, OPEN_PARTITION_LABEL, below_id],
    ).fetchall()
    return sorted(int(r[0]) for r in rows if r[0] is not None)


def insert_day_rows(con: Session, relation: str, columns: Sequence[str], rows: list[list]) -> None:
    """Insert per-day bookkeeping rows as bound parameters, `DAYS_PER_INSERT` rows a statement.

    A statement per chunk, not per row: on BigQuery every statement is a query job.
    """
    marks = "(" + ", ".join("?" for _ in columns) + ")"
    for i in range(0, len(rows), DAYS_PER_INSERT):
        chunk = rows[i : i + DAYS_PER_INSERT]
        con.execute(
            f"insert into {relation} ({', '.join(columns)}) values "
            + ", ".join(marks for _ in chunk),
            [v for row in chunk for v in row],
        )


def _ranges_sql(
    column: str, ranges: list[tuple[dt.date, dt.date]], as_text: bool = False
) -> tuple[str, list]:
    """`(column >= ? and column < ?) or ...` over half-open day ranges (`false` when none)."""
    if not ranges:
        return "false", []
    terms: list[str] = []
    params: list[object] = []
    for first, end in ranges:
        terms.append(f"({column} >= ? and {column} < ?)")
        params += [first.isoformat(), end.isoformat()] if as_text else [first, end]
    return "(" + " or ".join(terms) + ")", params


def fold_closed_ledger_rows(
    stager: Stager,
    closed_before: dt.datetime,
    late_after_id: int,
    reread_ranges: list[tuple[dt.date, dt.date]],
    first_read_ranges: list[tuple[dt.date, dt.date]],
) -> int:
    """Move the consistent cut's rows of closed days into `raw.credit_histories`; return how many.

    The cut reads, besides the open day, rows of closed days: rows written late (ids above the
    late mark) and days read again (changed, or never fingerprinted). They are written into their
    own day's partition — replacing the re-read days whole, and any older copy of the same id —
    so the next run, whose mark has moved past them, still holds them. Rows written late and rows
    of changed days also stay in the open slice for this run (the ledger view takes the open
    slice's copy of an id). Quarantined rows take their own day's label.
    Runs inside the caller's transaction, on the open slice's stager (either engine), and
    ends with the shrink guard over the whole ledger (`guard_whole_ledger`): a truncated source
    makes every closed day "changed", and replacing them would empty the ledger day by day.
    """
    con = stager.con
    stage, stage_rejected = stager.stage, stager.stage_rejected
    names = ", ".join(stager.table.extracted_names)
    ledger_before = whole_ledger_rows(con, f"raw.{OPEN_LEDGER_TABLE}")
    stager._quarantine_duplicates(None, "?", label_params=[OPEN_PARTITION_LABEL])
    folded = int(
        con.execute(
            f"select count(*) from {stage} where created_at < ?", [closed_before]
        ).fetchone()[0]
    )
    reread_sql, reread_params = _ranges_sql(PARTITION_COLUMN, reread_ranges)
    con.execute(
        f"delete from raw.{CREDIT_HISTORIES.name} where {reread_sql} "
        f"or id in (select id from {stage} where created_at < ?)",
        [*reread_params, closed_before],
    )
    con.execute(
        f"insert into raw.{CREDIT_HISTORIES.name} ({names}, {PARTITION_COLUMN}) "
        f"select {names}, cast(created_at as date) from {stage} where created_at < ?",
        [closed_before],
    )
    day_of = "cast(cast(try_cast(created_at as timestamp) as date) as varchar)"
    con.execute(
        f"update {stage_rejected} set {PARTITION_COLUMN} = {day_of} "
        f"where try_cast(created_at as timestamp) < ?",
        [closed_before],
    )
    rejected = f"raw.{rejected_name(CREDIT_HISTORIES.name)}"
    rejected_cols = ", ".join(
        [*stager.table.extracted_names, FAILED_COLUMN, REASON_COLUMN, PARTITION_COLUMN]
    )
    reread_text_sql, reread_text_params = _ranges_sql(PARTITION_COLUMN, reread_ranges, as_text=True)
    con.execute(
        f"delete from {rejected} where {PARTITION_COLUMN} <> ? and ({reread_text_sql} "
        f"or id in (select id from {stage_rejected} where {PARTITION_COLUMN} <> ?))",
        [OPEN_PARTITION_LABEL, *reread_text_params, OPEN_PARTITION_LABEL],
    )
    con.execute(
        f"insert into {rejected} ({rejected_cols}) select {rejected_cols} from {stage_rejected} "
        f"where {PARTITION_COLUMN} <> ?",
        [OPEN_PARTITION_LABEL],
    )
    con.execute(
        f"delete from {stage_rejected} where {PARTITION_COLUMN} <> ?", [OPEN_PARTITION_LABEL]
    )
    first_sql, first_params = _ranges_sql(
        "created_at",
        [
            (dt.datetime.combine(a, dt.time()), dt.datetime.combine(b, dt.time()))
            for a, b in first_read_ranges
        ],
    )
    # rows of days read for the first time that are not late: in their partition only
    con.execute(
        f"delete from {stage} where created_at < ? and id <= ? and {first_sql}",
        [closed_before, late_after_id, *first_params],
    )
    guard_whole_ledger(con, ledger_before, stage)
    return folded


WHOLE_LEDGER_RELATION = (
    f"raw.{CREDIT_HISTORIES.name} (closed days and raw.{OPEN_LEDGER_TABLE}: the whole ledger)"
)


def whole_ledger_rows(con, open_rows: str) -> int:
    """Distinct ledger ids in the closed partitions and `open_rows` (the open slice or its stage).

    Distinct, because some rows sit in both on purpose: rows written late and rows of changed days
    stay in the open slice for one run, and the open day is in both once its partition is loaded.
    Counting them once makes the before and after counts of one cut comparable.
    """
    row = con.execute(
        f"select count(distinct id) from (select id from raw.{CREDIT_HISTORIES.name} "
        f"union all select id from {open_rows})"
    ).fetchone()
    return int(row[0] or 0)


def guard_whole_ledger(con, before: int, new_open_rows: str) -> None:
    """The shrink guard over the whole ledger: `before` the fold against now, with the new slice.

    Called after `fold_closed_ledger_rows` has replaced the re-read closed days, inside the cut's
    transaction: a refusal raises `ShrinkRefused`, the caller rolls back, and the closed days, the
    open slice and the cut-off stay exactly as they were.
    """
    after = whole_ledger_rows(con, new_open_rows)
    guard_replacement(WHOLE_LEDGER_RELATION, CREDIT_HISTORIES.name, before, after)


def partition_row_counts(con, start: dt.date, end: dt.date) -> dict[dt.date, tuple[int, int]]:
    """(loaded, quarantined) rows of each partition day in [start, end), as its own run loaded
    them."""
    rows = con.execute(
        f"select partition_date, loaded_rows, rejected_rows from {LEDGER_PARTITIONS} "
        "where partition_date >= ? and partition_date < ?",
        [start, end],
    ).fetchall()
    out = {}
    for day, loaded, rejected in rows:
        day = day if isinstance(day, dt.date) else dt.date.fromisoformat(str(day)[:10])
        out[day] = (int(loaded or 0), int(rejected or 0))
    return out
