"""The BigQuery warehouse, as a Dagster resource, with a connection that speaks the pipeline's SQL.

Production runs on BigQuery (`CREDITS_WAREHOUSE=bigquery`); the demo and the tests on DuckDB. The
set-based ledger rules, the reconciliation and the extraction bookkeeping are written once, in
DuckDB's SQL, so that there is one source of truth for every rule. `BigQueryConnection` runs that
SQL on BigQuery: each statement is transpiled with sqlglot (DuckDB → BigQuery), its schemas are
mapped to datasets (`raw`, `credits`, `marts`, optionally behind `CREDITS_BIGQUERY_DATASET_PREFIX`),
and it executes inside one BigQuery session, so temp tables and multi-query transactions
(`begin transaction` ... `commit`) behave as they do on a DuckDB connection. The few places where
the dialects differ in meaning rather than spelling are fixed here, on the syntax tree, and listed
in `_to_bigquery`. Statements already written for BigQuery pass `dialect="bigquery"` and only get
their datasets mapped.
"""

import contextlib
import datetime as dt
import decimal
import io
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlglot
from dagster_gcp import BigQueryResource
from google.api_core.client_options import ClientOptions
from google.api_core.exceptions import GoogleAPICallError, NotFound
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from pydantic import Field
from sqlglot import exp

from credits_pipeline import settings
from credits_pipeline.names import (  # the staging dataset also holds Arrow given to `register`
    STAGING_SCHEMA,
    WAREHOUSE_SCHEMAS,
)
from credits_pipeline.warehouse import cost
from credits_pipeline.warehouse.bigquery_ledger_layout import ledger_tables_ddl
from credits_pipeline.warehouse.interface import in_transaction

ALL_SCHEMAS = (*WAREHOUSE_SCHEMAS, STAGING_SCHEMA)
# google-cloud-bigquery's own convention for pointing a client at a local emulator.
EMULATOR_HOST_VAR = "BIGQUERY_EMULATOR_HOST"
# DuckDB statements that end or start a transaction, and their BigQuery spelling.
TRANSACTION_STATEMENTS = {
    "begin": "begin transaction",
    "begin transaction": "begin transaction",
    "commit": "commit transaction",
    "commit transaction": "commit transaction",
    "rollback": "rollback transaction",
    "rollback transaction": "rollback transaction",
}
UNIX_MILLIS_SCALE = 3
POSITIONAL_PREFIX = "_p"
STATEMENT_IN_ERRORS = 2000  # characters of a failed statement quoted in its error
# Staging tables a crashed run leaves behind expire on their own.
STAGING_EXPIRATION_MS = 24 * 60 * 60 * 1000


class BigQueryWarehouse(BigQueryResource):
    """BigQuery datasets `raw`, `credits`, `marts` (behind an optional prefix), one session per use.

    Built on `dagster_gcp.BigQueryResource` (project, location, base64 service-account key); the
    prefix and an optional API endpoint (a local emulator; never set in production) are added.
    """

    kind: ClassVar[str] = "bigquery"
    dataset_prefix: str = Field(default="", description="Prefix of the raw/credits/marts datasets.")
    api_endpoint: str = Field(
        default="",
        description="REST endpoint of a BigQuery emulator (tests). Empty: Google's, or "
        f"${EMULATOR_HOST_VAR} when set.",
    )

    def dataset(self, schema: str) -> str:
        return f"{self.dataset_prefix}{schema}"

    def describe(self) -> str:
        """Where the warehouse is, for people: project and dataset prefix (never a credential)."""
        return f"bigquery project {self.project}, datasets {self.dataset('{raw,credits,marts}')}"

    def endpoint(self) -> str:
        return self.api_endpoint or os.environ.get(EMULATOR_HOST_VAR, "")

    def client(self) -> bigquery.Client:
        endpoint = self.endpoint()
        if endpoint:
            # An emulator takes no credentials; a real project never sets an endpoint.
            if not endpoint.startswith("http"):
                endpoint = f"http://{endpoint}"
            return bigquery.Client(
                project=self.project,
                location=self.location,
                credentials=AnonymousCredentials(),
                client_options=ClientOptions(api_endpoint=endpoint),
            )
        with self.get_client() as client:
            return client

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator["BigQueryConnection"]:
        client = self.client()
        asset, run_id = cost.current_asset_and_run()
        con = BigQueryConnection(
            client,
            self.dataset_prefix,
            self.location,
            labels=cost.job_labels(asset, run_id),
            maximum_bytes_billed=settings.bigquery_maximum_bytes_billed(),
        )
        try:
            if not read_only:
                self._ensure_datasets(client)
                ensure_ledger_tables(con)
            yield con
        finally:
            con.close()

    def _ensure_datasets(self, client: bigquery.Client) -> None:
        for schema in ALL_SCHEMAS:
            dataset = bigquery.Dataset(f"{client.project}.{self.dataset(schema)}")
            if self.location:
                dataset.location = self.location
            if schema == STAGING_SCHEMA:
                dataset.default_table_expiration_ms = STAGING_EXPIRATION_MS
            client.create_dataset(dataset, exists_ok=True)

    def usage_metadata(self, con: "BigQueryConnection") -> dict[str, dg.MetadataValue]:
        """Bytes processed and billed by `con`'s query jobs so far (numeric asset metadata)."""
        return cost.connection_usage_metadata(con)

    def dbt_usage(self, events: list, run_results: dict) -> list:
        """dbt's events with each model's bytes processed and billed (from run_results.json)."""
        return cost.with_dbt_statistics(events, run_results)

    @contextlib.contextmanager
    def session_if_exists(self) -> Iterator["BigQueryConnection"]:
        """A session: the datasets are created on first use, so there is always one."""
        with self.connect() as con:
            yield con

    @contextlib.contextmanager
    def preview_session(self) -> Iterator[None]:
        """No previews on BigQuery: each would be a billed query."""
        yield None

    @contextlib.contextmanager
    def transaction(self) -> Iterator["BigQueryConnection"]:
        """A session inside BEGIN ... COMMIT TRANSACTION; any exception rolls it back.

        BigQuery allows no DDL on permanent tables inside a transaction: writers create their
        tables first and change rows inside.
        """
        with self.connect() as con, in_transaction(con):
            yield con


def warehouse_from_env() -> BigQueryWarehouse:
    """The resource from `CREDITS_BIGQUERY_*`, as EnvVars where they are set (never printed)."""
    fields: dict[str, Any] = {}
    for field, var in (
        ("project", settings.BIGQUERY_PROJECT_VAR),
        ("location", settings.BIGQUERY_LOCATION_VAR),
        ("dataset_prefix", settings.BIGQUERY_DATASET_PREFIX_VAR),
        ("gcp_credentials", settings.BIGQUERY_CREDENTIALS_VAR),
    ):
        if os.environ.get(var):
            fields[field] = dg.EnvVar(var)
    return BigQueryWarehouse(**fields)


# -- translating the pipeline's DuckDB SQL -------------------------------------------------------


def _inline_named_windows(select: exp.Select) -> None:
    """`over w ... window w as (...)` → the window spelled out (BigQuery's generator needs it)."""
    named = {
        w.this.name: w
        for w in select.args.get("windows") or []
        if isinstance(w.this, exp.Identifier)
    }
    if not named:
        return
    for window in select.find_all(exp.Window):
        ref = window.args.get("alias")
        spec = named.get(ref.name) if isinstance(ref, exp.Identifier) else None
        if spec is None or window in named.values():
            continue
        for key in ("partition_by", "order", "spec"):
            value = spec.args.get(key)
            if value is not None:
                window.set(
                    key, [e.copy() for e in value] if isinstance(value, list) else value.copy()
                )
        window.set("alias", None)
    select.set("windows", None)


def _to_bigquery(tree: exp.Expr, datasets: Mapping[str, str], registered: Mapping[str, str]) -> str:
    """BigQuery SQL for a DuckDB syntax tree. Besides sqlglot's own transpilation:

    - schemas `raw`/`credits`/`marts`/`_staging` become their (prefixed) datasets, and names given
      to `register` become their staging tables;
    - DuckDB's naive `timestamp` is BigQuery's `TIMESTAMP` (every warehouse timestamp is UTC);
      `strftime` of one is `format_timestamp`; `epoch_ms(ts)` is `unix_millis(ts)` (the pipeline
      applies `epoch_ms` to timestamps only);
    - temp views become session temp tables (BigQuery has no temporary views);
    - named windows (`window w as (...)`) are spelled out where they are used;
    - DuckDB's string `hash(text)` is `farm_fingerprint(text)` (both a 64-bit hash of the text;
      a fingerprint is only compared with one computed by the same engine);
    - column `primary key` constraints are dropped (BigQuery enforces none), and a `delete` without
      `where` gets `where true` (BigQuery requires one).
    """
    for select in list(tree.find_all(exp.Select)):
        _inline_named_windows(select)
    # Positional `?` become named `@_p0`, `@_p1`, ... in textual order: a named parameter stays
    # bound wherever a rewrite (ours, or the engine's) repeats the expression holding it.
    for i, placeholder in enumerate(
        [p for p in tree.find_all(exp.Placeholder, bfs=False) if not p.this]
    ):
        placeholder.replace(exp.Parameter(this=exp.var(f"{POSITIONAL_PREFIX}{i}")))

    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
            db = node.args.get("db")
            if db is not None and db.name in datasets:
                node.set("db", exp.to_identifier(datasets[db.name]))
            elif db is None and node.name in registered:
                node.set("db", exp.to_identifier(datasets[STAGING_SCHEMA]))
                node.set("this", exp.to_identifier(registered[node.name]))
            return node
        if isinstance(node, exp.DataType) and node.this in (
            exp.DataType.Type.TIMESTAMP,
            exp.DataType.Type.TIMESTAMPNTZ,
        ):
            return exp.DataType.build("TIMESTAMP", dialect="bigquery")
        if isinstance(node, exp.UnixToTime):
            scale = node.args.get("scale")
            if (
                scale is not None
                and scale.name == str(UNIX_MILLIS_SCALE)
                and not node.this.is_number
            ):
                return exp.Anonymous(this="UNIX_MILLIS", expressions=[node.this])
        if isinstance(node, exp.TimeToStr):
            # strftime elements of DuckDB and BigQuery's format_timestamp agree for those used here.
            fmt = exp.Literal.string(node.args["format"].name)
            return exp.Anonymous(this="FORMAT_TIMESTAMP", expressions=[fmt, node.this])
        if isinstance(node, exp.Create) and str(node.args.get("kind", "")).upper() == "VIEW":
            props = node.args.get("properties")
            if props and any(isinstance(p, exp.TemporaryProperty) for p in props.expressions):
                node.set("kind", "TABLE")
        if isinstance(node, exp.Drop) and str(node.args.get("kind", "")).upper() == "VIEW":
            node.set("kind", "TABLE")
        if isinstance(node, exp.ColumnConstraint) and isinstance(
            node.args.get("kind"), exp.PrimaryKeyColumnConstraint
        ):
            # sqlglot's transform drops a node its function maps to None (not in its annotation).
            return None  # type: ignore[return-value]
        if isinstance(node, exp.Anonymous) and node.name.lower() == "hash":
            return exp.Anonymous(this="FARM_FINGERPRINT", expressions=node.expressions)
        if isinstance(node, exp.Delete) and node.args.get("where") is None:
            node.set("where", exp.Where(this=exp.true()))
        return node

    return tree.transform(rewrite).sql(dialect="bigquery")


def _param(name: str | None, value: object) -> bigquery.ScalarQueryParameter:
    if isinstance(value, bool):
        kind = "BOOL"
    elif isinstance(value, (int, np.integer)):
        kind, value = "INT64", int(value)
    elif isinstance(value, (float, np.floating, decimal.Decimal)):
        kind, value = "FLOAT64", float(value)
    elif isinstance(value, dt.datetime):
        kind = "TIMESTAMP"
        value = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    elif isinstance(value, dt.date):
        kind = "DATE"
    elif value is None:
        kind = "STRING"
    else:
        kind, value = "STRING", str(value)
    return bigquery.ScalarQueryParameter(name, kind, value)


def _naive(value: object) -> object:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _naive_arrow(table: pa.Table) -> pa.Table:
    """Timestamps as naive UTC (what a DuckDB connection returns for `timestamp`)."""
    columns = []
    for field, column in zip(table.schema, table.columns, strict=False):
        if pa.types.is_timestamp(field.type) and field.type.tz is not None:
            column = column.cast(pa.timestamp(field.type.unit))
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def _utc_arrow(table: pa.Table) -> pa.Table:
    """Naive timestamps marked UTC, so that BigQuery loads them as TIMESTAMP, not DATETIME."""
    columns = []
    for field, column in zip(table.schema, table.columns, strict=False):
        if pa.types.is_timestamp(field.type) and field.type.tz is None:
            column = column.cast(pa.timestamp("us", tz="UTC"))
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def _bigquery_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_boolean(arrow_type):
        return "BOOL"
    if pa.types.is_integer(arrow_type):
        return "INT64"
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "FLOAT64"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP"
    if pa.types.is_date(arrow_type):
        return "DATE"
    return "STRING"


def arrow_schema(table: pa.Table) -> list[bigquery.SchemaField]:
    """The BigQuery schema of an Arrow table (stated, never auto-detected)."""
    return [bigquery.SchemaField(f.name, _bigquery_type(f.type)) for f in table.schema]


# Legacy type names the tables API reports, as the standard SQL names of `_bigquery_type`.
LEGACY_TYPE_NAMES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}


def replace_table_schema(
    con: "BigQueryConnection", schema: str, name: str, table: pa.Table
) -> None:
    """Make `<schema>.<name>` exist with the columns of `table`: kept when they match, else
    recreated.

    DDL, so never inside a transaction: a writer calls it first, then changes rows in one.
    """
    ref = con.table_ref(schema, name)
    wanted = arrow_schema(table)
    try:
        current = [
            (f.name, LEGACY_TYPE_NAMES.get(f.field_type, f.field_type))
            for f in con.client.get_table(ref).schema
        ]
    except NotFound:
        current = None
    if current != [(f.name, f.field_type) for f in wanted]:
        con.client.delete_table(ref, not_found_ok=True)
        con.client.create_table(bigquery.Table(ref, schema=wanted))


class BigQueryResult:
    """The fetch methods of a DuckDB result, over one finished BigQuery query."""

    def __init__(self, arrow: pa.Table | None, job: bigquery.QueryJob):
        self.job = job
        self._arrow = _naive_arrow(arrow) if arrow is not None else pa.table({})
        self._rows: list[tuple] | None = None
        self._next = 0

    def _all_rows(self) -> list[tuple]:
        if self._rows is None:
            cols = [c.to_pylist() for c in self._arrow.columns]
            self._rows = (
                [tuple(_naive(v) for v in row) for row in zip(*cols, strict=False)] if cols else []
            )
        return self._rows

    def fetchone(self) -> tuple | None:
        rows = self._all_rows()
        if self._next >= len(rows):
            return None
        self._next += 1
        return rows[self._next - 1]

    def fetchall(self) -> list[tuple]:
        rows = self._all_rows()[self._next :]
        self._next = len(self._all_rows())
        return rows

    def fetchdf(self) -> pd.DataFrame:
        return self._arrow.to_pandas()

    def fetch_arrow_table(self) -> pa.Table:
        return self._arrow

    def fetchnumpy(self) -> dict[str, np.ndarray]:
        """Columns as numpy arrays; integer columns with NULLs as masked arrays (as DuckDB does)."""
        out: dict[str, np.ndarray] = {}
        for name, column in zip(self._arrow.column_names, self._arrow.columns, strict=False):
            column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
            if column.null_count and pa.types.is_integer(column.type):
                mask = column.is_null().to_numpy(zero_copy_only=False)
                data = np.array(column.fill_null(0).to_numpy(zero_copy_only=False))
                out[name] = np.ma.MaskedArray(data, mask=mask)
            else:
                out[name] = np.array(column.to_numpy(zero_copy_only=False))  # writable, as DuckDB's
        return out


class BigQueryConnection:
    """A DuckDB-connection look-alike over one BigQuery session (see the module docstring)."""

    def __init__(
        self,
        client: bigquery.Client,
        dataset_prefix: str = "",
        location: str | None = None,
        labels: Mapping[str, str] | None = None,
        maximum_bytes_billed: int | None = None,
    ):
        self.client = client
        # on every job: who started it (cost.job_labels) and the most it may bill (None: no cap)
        self.labels = dict(labels or cost.job_labels())
        self.maximum_bytes_billed = maximum_bytes_billed
        self.statistics = cost.JobStatistics()
        self.prefix = dataset_prefix
        self.location = location
        self.datasets = {s: f"{dataset_prefix}{s}" for s in ALL_SCHEMAS}
        self._registered: dict[str, str] = {}
        self._session_id: str | None = None
        self.bytes_processed = 0
        self.in_transaction = False  # between `begin` and `commit`/`rollback` of this session

    # -- SQL ----------------------------------------------------------------------------------

    def translate(self, statement: str, dialect: str = "duckdb") -> str:
        normalized = " ".join(statement.strip().rstrip(";").lower().split())
        if normalized in TRANSACTION_STATEMENTS:
            return TRANSACTION_STATEMENTS[normalized]
        tree = sqlglot.parse_one(statement, read=dialect)
        return _to_bigquery(tree, self.datasets, self._registered)

    def execute(
        self,
        statement: str,
        params: Sequence[object] | Mapping[str, object] | None = None,
        dialect: str = "duckdb",
    ) -> BigQueryResult:
        sql = self.translate(statement, dialect)
        if sql in ("begin transaction", "commit transaction", "rollback transaction"):
            self.in_transaction = sql == "begin transaction"
        if isinstance(params, Mapping):
            query_params = [_param(k, v) for k, v in params.items()]
        else:
            query_params = [
                _param(f"{POSITIONAL_PREFIX}{i}", v) for i, v in enumerate(params or [])
            ]
        return self.query(sql, query_params)

    def executemany(self, statement: str, rows: Sequence[Sequence[object]]) -> None:
        for row in rows:
            self.execute(statement, list(row))

    def query(self, sql: str, query_params: list | None = None) -> BigQueryResult:
        """Run BigQuery SQL as is (datasets already qualified) in this connection's session."""
        job, rows = self._run(sql, query_params)
        arrow = (
            rows.to_arrow(create_bqstorage_client=False)
            if job.statement_type == "SELECT" or rows.schema
            else None
        )
        return BigQueryResult(arrow, job)

    def _run(self, sql: str, query_params: list | None, page_size: int | None = None) -> tuple:
        """Start a query job in this connection's session and wait for it; errors name the
        statement."""
        config = bigquery.QueryJobConfig(query_parameters=query_params or [], labels=self.labels)
        if self.maximum_bytes_billed is not None:
            config.maximum_bytes_billed = self.maximum_bytes_billed
        if self._session_id is None:
            config.create_session = True
        else:
            config.connection_properties = [
                bigquery.ConnectionProperty("session_id", self._session_id)
            ]
        job = self.client.query(sql, job_config=config, location=self.location)
        try:
            rows = job.result(page_size=page_size)
        except GoogleAPICallError as exc:
            exc.message = f"{exc.message}\nstatement: {sql[:STATEMENT_IN_ERRORS]}"
            raise
        if self._session_id is None and job.session_info is not None:
            self._session_id = job.session_info.session_id
        self.bytes_processed += int(job.total_bytes_processed or 0)
        self.statistics.add(job.total_bytes_processed, job.total_bytes_billed)
        return job, rows

    def stream(
        self, statement: str, params: Mapping[str, object], batch_rows: int, dialect: str = "duckdb"
    ) -> Iterator[pa.RecordBatch]:
        """A SELECT's rows as Arrow record batches of at most `batch_rows`, fetched page by page.

        Why: the replay reads a result far larger than a worker's memory on a full replay; pages
        of the query's result keep what is held at once bounded (DuckDB's `fetch_record_batch`).
        """
        _, rows = self._run(
            self.translate(statement, dialect),
            [_param(k, v) for k, v in params.items()],
            batch_rows,
        )
        for batch in rows.to_arrow_iterable():
            # a page may exceed batch_rows when the service ignores the page size
            for offset in range(0, batch.num_rows, batch_rows):
                yield batch.slice(offset, batch_rows)

    def replace_tables(self, tables: Mapping[str, pa.Table | str]) -> None:
        """`session.replace_tables` on BigQuery: columns first, then every table's rows at once.

        Each key is `<schema>.<name>`, each value an Arrow table or a relation of this session (a
        temp table). BigQuery allows no DDL on permanent tables inside a transaction, so: the
        caller's transaction (if one is open: by convention it changed only temp tables and
        staging so far) is committed, each target is made to match its columns (created, or
        recreated when they changed), and one transaction deletes and inserts the rows of all
        targets. Inside a caller's transaction that one is left open for the caller to commit or
        roll back; outside one it commits here.
        """
        staged: dict[str, str] = {}
        shapes: dict[str, pa.Table] = {}
        for target, source in tables.items():
            if isinstance(source, str):
                staged[target] = source
                # the relation's columns, as an empty Arrow table for the DDL
                shapes[target] = self.execute(f"select * from {source} limit 0").fetch_arrow_table()
            else:
                staged[target] = "_replace_" + target.replace(".", "_")
                shapes[target] = source
        in_caller_transaction = self.in_transaction
        if in_caller_transaction:
            self.execute("commit")
        for target, shape in shapes.items():
            schema, name = target.split(".", 1)
            replace_table_schema(self, schema, name, shape)
        registered = []
        for target, source in tables.items():
            if not isinstance(source, str):
                self.register(staged[target], source)
                registered.append(staged[target])
        self.execute("begin transaction")
        try:
            for target, source in staged.items():
                self.execute(f"delete from {target} where true", dialect="bigquery")
                self.execute(f"insert into {target} select * from {source}", dialect="bigquery")
        except BaseException:
            self.execute("rollback")
            raise
        if not in_caller_transaction:
            self.execute("commit")
            for name in registered:
                self.unregister(name)
        # else the staged rows stay until the session closes, after the caller's commit

    # -- Arrow and pandas tables as relations ---------------------------------------------------

    def table_ref(self, schema: str, name: str) -> str:
        return f"{self.client.project}.{self.datasets[schema]}.{name}"

    def load_arrow(
        self,
        table: pa.Table,
        schema: str,
        name: str,
        append: bool = False,
        bq_schema: list[bigquery.SchemaField] | None = None,
    ) -> None:
        """Load an Arrow table into `<schema>.<name>` (parquet load job: no row-by-row inserts).

        Without `append` the table is replaced: dropped, then created by the load.
        """
        if not append:
            self.client.delete_table(self.table_ref(schema, name), not_found_ok=True)
        buffer = io.BytesIO()
        pq.write_table(_utc_arrow(table), buffer)
        buffer.seek(0)
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition="WRITE_APPEND",
            labels=self.labels,
        )
        config.schema = bq_schema if bq_schema is not None else arrow_schema(table)
        self.client.load_table_from_file(
            buffer, self.table_ref(schema, name), job_config=config, location=self.location
        ).result()

    def register(self, name: str, data: pa.Table | pd.DataFrame) -> None:
        """Make `data` readable as `name` in later statements (a table in the staging dataset)."""
        table = (
            data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
        )
        target = f"_reg_{re.sub(r'[^A-Za-z0-9_]', '_', name)}"
        self.load_arrow(table, STAGING_SCHEMA, target)
        self._registered[name] = target

    def unregister(self, name: str) -> None:
        target = self._registered.pop(name, None)
        if target:
            self.client.delete_table(self.table_ref(STAGING_SCHEMA, target), not_found_ok=True)

    def close(self) -> None:
        for name in list(self._registered):
            self.unregister(name)
        if self._session_id is not None:
            with contextlib.suppress(Exception):
                self.query("call bq.abort_session()")
            self._session_id = None


def ensure_ledger_tables(con: BigQueryConnection) -> None:
    """The ledger tables, partitioned by day and clustered by id, before anything else creates them
    (`bigquery_ledger_layout`)."""
    for ddl in ledger_tables_ddl():
        con.execute(ddl, dialect="bigquery")
