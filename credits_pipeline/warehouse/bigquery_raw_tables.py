"""Landing extracted rows in BigQuery's `raw` dataset: the same staged, atomic swaps as on DuckDB.

`raw_tables.Stager` stages into DuckDB and swaps with DuckDB SQL (`rowid`, in-process Arrow scans).
`BigQueryStager` keeps its contract — same methods, same counts, same quarantine reasons — on
BigQuery: validated batches are appended to a staging table by load jobs (bounded memory, no
row-by-row inserts), duplicates are quarantined in staging, and one multi-statement transaction
(`begin transaction` ... `commit transaction` in the connection's session) replaces exactly the
slice: the ledger's days (`raw.credit_histories` is partitioned by `_partition` and clustered by
id, so the delete touches only those partitions), the ids of a merge, or the whole table. BigQuery
allows no DDL on permanent tables inside a transaction, so staging tables are created before and
dropped after it; the staging dataset expires forgotten tables after a day.
"""

import datetime as dt

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from google.cloud import bigquery

from credits_pipeline.names import OPEN_LEDGER_TABLE, STAGING_SCHEMA
from credits_pipeline.source.column_types import types_by_kind
from credits_pipeline.source.tables import CREDIT_HISTORIES, Table
from credits_pipeline.validation.outcome import FAILED_COLUMN, REASON_COLUMN, ValidatedBatch
from credits_pipeline.warehouse.bigquery_ledger_layout import BIGQUERY_TYPES
from credits_pipeline.warehouse.bigquery_warehouse import BigQueryConnection, ensure_ledger_tables
from credits_pipeline.warehouse.raw_tables import (
    LEDGER_PARTITIONS,
    PARTITION_COLUMN,
    WATERMARKS,
    WHOLE_TABLE_LABEL,
    StageStats,
    ensure_raw_tables,
    rejected_name,
    rejected_partition_labels,
)
from credits_pipeline.warehouse.shrink_guard import guard_replacement

# kind -> Arrow type of a load job: UTC-aware timestamps (column_types.py)
ARROW_TYPES = types_by_kind(lambda t: t.arrow_bigquery)
SEQ_COLUMN = "_seq"  # arrival order of a staged row: the first copy of a duplicate id wins


class BigQueryStager:
    """`raw_tables.Stager` on BigQuery: stage with load jobs, swap in one transaction."""

    def __init__(self, con: BigQueryConnection, table: Table, target: str | None = None):
        self.con = con
        self.table = table
        self.target = target or table.name
        self.stage = f"{STAGING_SCHEMA}.{self.target}"
        self.stage_rejected = f"{STAGING_SCHEMA}.{rejected_name(self.target)}"
        self.stats = StageStats()
        self._seq = 0
        if table is CREDIT_HISTORIES:
            ensure_ledger_tables(con)
        ensure_raw_tables(con, table)  # type: ignore[arg-type]  # speaks DuckDB's execute()
        names = [c.name for c in table.extracted_columns]
        self._schema = [
            bigquery.SchemaField(c.name, BIGQUERY_TYPES[c.kind]) for c in table.extracted_columns
        ]
        self._schema.append(bigquery.SchemaField(SEQ_COLUMN, "INT64"))
        text = [*names, FAILED_COLUMN, REASON_COLUMN, PARTITION_COLUMN]
        self._rejected_schema = [bigquery.SchemaField(n, "STRING") for n in text]
        self._rejected_schema.append(bigquery.SchemaField(SEQ_COLUMN, "INT64"))
        for stage, schema in (
            (self.stage, self._schema),
            (self.stage_rejected, self._rejected_schema),
        ):
            cols = ", ".join(f"{f.name} {f.field_type}" for f in schema)
            con.execute(f"create or replace table {stage} ({cols})", dialect="bigquery")

    # -- staging --------------------------------------------------------------------------------

    def _typed_arrow(self, clean: pa.Table | pd.DataFrame) -> pa.Table:
        names = self.table.extracted_names
        if isinstance(clean, pd.DataFrame):
            frame = clean[names].astype(object).where(clean[names].notna(), None)
            arrays = [
                pa.array(
                    frame[c.name].tolist(),
                    type=ARROW_TYPES[c.kind] if c.kind != "ts" else pa.timestamp("us"),
                )
                for c in self.table.extracted_columns
            ]
            clean = pa.table(arrays, names=names)
        columns = []
        for c in self.table.extracted_columns:
            column = clean.column(c.name)
            if c.kind == "ts" and column.type.tz is None:
                column = pc.assume_timezone(column.cast(pa.timestamp("us")), "UTC")
            columns.append(column.cast(ARROW_TYPES[c.kind]))
        return pa.table(columns, names=names)

    def _with_seq(self, table: pa.Table) -> pa.Table:
        seq = pa.array(range(self._seq, self._seq + table.num_rows), pa.int64())
        self._seq += table.num_rows
        return table.append_column(SEQ_COLUMN, seq)

    def append(self, batch: ValidatedBatch, partition_label: str | None = None) -> None:
        rows = batch.clean.num_rows if isinstance(batch.clean, pa.Table) else len(batch.clean)
        if rows:
            table = self._with_seq(self._typed_arrow(batch.clean))
            self.con.load_arrow(
                table, STAGING_SCHEMA, self.target, append=True, bq_schema=self._schema
            )
        if len(batch.rejected):
            names = self.table.extracted_names
            rejected = batch.rejected[[*names, FAILED_COLUMN, REASON_COLUMN]].copy()
            rejected[PARTITION_COLUMN] = rejected_partition_labels(
                self.table, self.target, rejected, partition_label
            )
            rejected = rejected.astype(object).where(rejected.notna(), None)
            text = pa.table(
                {
                    c: pa.array([None if v is None else str(v) for v in rejected[c]], pa.string())
                    for c in rejected.columns
                }
            )
            self.con.load_arrow(
                self._with_seq(text),
                STAGING_SCHEMA,
                rejected_name(self.target),
                append=True,
                bq_schema=self._rejected_schema,
            )
        self.stats.loaded += rows
        self.stats.rejected += len(batch.rejected)

    append_arrow = append

    # -- duplicates, then the swap ----------------------------------------------------------------

    def _quarantine_duplicates(
        self, kept_elsewhere_sql: str | None, label_sql: str, kept_params: list, label_params: list
    ) -> int:
        """Move staged rows whose id repeats (in staging, or among rows the swap keeps) to
        quarantine."""
        as_text = ", ".join(
            f"format_timestamp('%Y-%m-%d %H:%M:%S', {c.name})"
            if c.kind == "ts"
            else f"cast({c.name} as string)"
            for c in self.table.extracted_columns
        )
        elsewhere = f" or id in ({kept_elsewhere_sql})" if kept_elsewhere_sql else ""
        con = self.con
        con.execute(
            f"""
            create or replace temp table _dups as
            select {SEQ_COLUMN} as seq from (
                select {SEQ_COLUMN}, id,
                    row_number() over (partition by id order by {SEQ_COLUMN}) as copy_number
                from {self.stage}
            ) where copy_number > 1{elsewhere}
            """,
            kept_params,
            dialect="bigquery",
        )
        moved = con.execute("select count(*) from _dups", dialect="bigquery").fetchone()[0]  # type: ignore[index]
        if moved:
            con.execute(
                f"""
                insert into {self.stage_rejected}
                select {as_text}, 'id',
                       concat('id: duplicate primary key ', cast(id as string),
                              ' (already loaded, or a later copy in this extraction)'),
                       {label_sql}, {SEQ_COLUMN}
                from {self.stage} where {SEQ_COLUMN} in (select seq from _dups)
                """,
                label_params,
                dialect="bigquery",
            )
            con.execute(
                f"delete from {self.stage} where {SEQ_COLUMN} in (select seq from _dups)",
                dialect="bigquery",
            )
            self.stats.loaded -= moved
            self.stats.rejected += moved
        con.execute("drop table if exists _dups", dialect="bigquery")
        return int(moved)

    def _rejected_columns(self) -> str:
        return ", ".join(
            [*self.table.extracted_names, FAILED_COLUMN, REASON_COLUMN, PARTITION_COLUMN]
        )

    def _drop_stage(self) -> None:
        for stage in (self.stage, self.stage_rejected):
            self.con.execute(f"drop table if exists {stage}", dialect="bigquery")

    def _guard_shrink(self, relation: str, before_sql: str, params: list) -> None:
        """The shrink guard (`shrink_guard.py`), as `Stager._guard_shrink`."""
        before = self.con.execute(before_sql, params, dialect="bigquery").fetchone()[0]  # type: ignore[index]
        after = self.con.execute(
            f"select count(*) from {self.stage}", dialect="bigquery"
        ).fetchone()[0]  # type: ignore[index]
        guard_replacement(relation, self.table.name, int(before), int(after))

    def _guard_whole_replacement(self) -> None:
        """A whole table; the open ledger slice is judged by `fold_closed_ledger_rows` (as
        `Stager`'s: one guard over the whole ledger, shared by both engines)."""
        if self.target != OPEN_LEDGER_TABLE:
            self._guard_shrink(f"raw.{self.target}", f"select count(*) from raw.{self.target}", [])

    def _begin(self, external: bool) -> None:
        if not external:
            self.con.execute("begin transaction")

    def _commit(self, external: bool) -> None:
        if not external:
            self.con.execute("commit")

    def _rollback(self, external: bool) -> None:
        if not external:
            self.con.execute("rollback")

    def swap_ledger_range(self, start: dt.date, end: dt.date) -> dict[dt.date, int]:
        """Replace ledger partitions [start, end) with the staged rows, in one transaction."""
        keys = [start + dt.timedelta(days=i) for i in range((end - start).days)]
        con = self.con
        ledger = f"raw.{self.table.name}"
        # Duplicates against rows kept outside the range: only ids within the staged id range can
        # collide, and the ledger is clustered by id, so this reads a few blocks, not the history.
        self._quarantine_duplicates(
            f"select id from {ledger} where ({PARTITION_COLUMN} < ? or {PARTITION_COLUMN} >= ? "
            f"or {PARTITION_COLUMN} is null) and id between (select min(id) from {self.stage}) "
            f"and (select max(id) from {self.stage})",
            "coalesce(format_timestamp('%Y-%m-%d', created_at), ?)",
            [start, end],
            [start.isoformat()],
        )
        counts = dict(
            con.execute(
                f"select date(created_at), count(*) from {self.stage} group by 1",
                dialect="bigquery",
            ).fetchall()
        )
        rejected = dict(
            con.execute(
                f"select safe_cast({PARTITION_COLUMN} as date), count(*) from "
                f"{self.stage_rejected} group by 1",
                dialect="bigquery",
            ).fetchall()
        )
        names = ", ".join(self.table.extracted_names)
        rows = ", ".join(
            f"(date '{k.isoformat()}', {int(counts.get(k, 0))}, {int(rejected.get(k, 0))})"
            for k in keys
        )
        con.execute("begin transaction")
        try:
            self._guard_shrink(
                f"{ledger} for [{start}, {end})",
                f"select count(*) from {ledger} where {PARTITION_COLUMN} >= ? and "
                f"{PARTITION_COLUMN} < ?",
                [start, end],
            )
            con.execute(
                f"delete from {ledger} where {PARTITION_COLUMN} >= ? and {PARTITION_COLUMN} < ?",
                [start, end],
                dialect="bigquery",
            )
            con.execute(
                f"insert into {ledger} ({names}, {PARTITION_COLUMN}) "
                f"select {names}, date(created_at) from {self.stage}",
                dialect="bigquery",
            )
            target_rejected = f"raw.{rejected_name(self.table.name)}"
            con.execute(
                f"delete from {target_rejected} where {PARTITION_COLUMN} >= ? and "
                f"{PARTITION_COLUMN} < ?",
                [start.isoformat(), end.isoformat()],
                dialect="bigquery",
            )
            con.execute(
                f"insert into {target_rejected} ({self._rejected_columns()}) "
                f"select {self._rejected_columns()} from {self.stage_rejected}",
                dialect="bigquery",
            )
            con.execute(
                f"delete from {LEDGER_PARTITIONS} where partition_date >= ? and partition_date < ?",
                [start, end],
                dialect="bigquery",
            )
            if rows:
                con.execute(
                    f"insert into {LEDGER_PARTITIONS} (partition_date, loaded_rows, "
                    f"rejected_rows) values {rows}",
                    dialect="bigquery",
                )
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
        self._drop_stage()
        return {k: int(counts.get(k, 0)) for k in keys}

    def merge_by_id(
        self, watermark: tuple[dt.datetime | None, int | None] | None, in_transaction: bool = False
    ) -> None:
        """Upsert the staged rows by id (and their quarantine rows), then move the watermark."""
        con = self.con
        target = f"raw.{self.target}"
        names = ", ".join(self.table.extracted_names)
        self._quarantine_duplicates(None, "?", [], [WHOLE_TABLE_LABEL])
        self._begin(in_transaction)
        try:
            con.execute(
                f"delete from {target} where id in (select id from {self.stage})",
                dialect="bigquery",
            )
            con.execute(
                f"insert into {target} ({names}) select {names} from {self.stage}",
                dialect="bigquery",
            )
            target_rejected = f"raw.{rejected_name(self.table.name)}"
            con.execute(
                f"delete from {target_rejected} where id in (select id from {self.stage_rejected}) "
                f"or id in (select cast(id as string) from {self.stage})",
                dialect="bigquery",
            )
            con.execute(
                f"insert into {target_rejected} ({self._rejected_columns()}) "
                f"select {self._rejected_columns()} from {self.stage_rejected}",
                dialect="bigquery",
            )
            if watermark is not None:
                con.execute(
                    f"delete from {WATERMARKS} where table_name = ?",
                    [self.target],
                    dialect="bigquery",
                )
                con.execute(
                    f"insert into {WATERMARKS} (table_name, updated_at, max_id) values (?, ?, ?)",
                    [self.target, *watermark],
                    dialect="bigquery",
                )
        except BaseException:
            self._rollback(in_transaction)
            raise
        self._commit(in_transaction)
        if not in_transaction:
            self._drop_stage()

    def replace_whole(
        self, partition_label: str = WHOLE_TABLE_LABEL, in_transaction: bool = False
    ) -> None:
        """Replace the whole target (and its quarantine rows of this label) in one transaction."""
        con = self.con
        target = f"raw.{self.target}"
        names = ", ".join(self.table.extracted_names)
        self._quarantine_duplicates(None, "?", [], [partition_label])
        is_open = self.target == OPEN_LEDGER_TABLE
        columns = f"{names}, {PARTITION_COLUMN}" if is_open else names
        select = f"{names}, date(created_at)" if is_open else names
        self._begin(in_transaction)
        try:
            self._guard_whole_replacement()
            con.execute(f"delete from {target} where true", dialect="bigquery")
            con.execute(
                f"insert into {target} ({columns}) select {select} from {self.stage}",
                dialect="bigquery",
            )
            target_rejected = f"raw.{rejected_name(self.table.name)}"
            con.execute(
                f"delete from {target_rejected} where {PARTITION_COLUMN} = ?",
                [partition_label],
                dialect="bigquery",
            )
            con.execute(
                f"insert into {target_rejected} ({self._rejected_columns()}) "
                f"select {self._rejected_columns()} from {self.stage_rejected}",
                dialect="bigquery",
            )
        except BaseException:
            self._rollback(in_transaction)
            raise
        self._commit(in_transaction)
        if not in_transaction:
            self._drop_stage()
