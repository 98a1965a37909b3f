"""SQLAlchemy Core DDL for the contract's tables, on any dialect.

The demo generator and the tests create `syllaby_v2` on SQLite, MariaDB and PostgreSQL from the same
definition (`tables.py`), each column at its kind's source type in `column_types.py` (MySQL's
unsigned integers have no PostgreSQL/SQLite counterpart, so ids become BIGINT everywhere); the two
production foreign keys are optional, because demo and test databases must be able to hold the
orphan rows the pipeline reports.
"""

from __future__ import annotations

import sqlalchemy as sa

from credits_pipeline.source.column_types import COLUMN_TYPES
from credits_pipeline.source.tables import CREDIT_HISTORIES, TABLES, Column, Table


def _column(table: Table, col: Column) -> sa.Column:
    is_pk = col.name == "id"
    return sa.Column(
        col.name,
        COLUMN_TYPES[col.kind].source(col.length),
        primary_key=is_pk,
        autoincrement=is_pk,
        nullable=col.nullable and not is_pk,
    )


def build_metadata(with_foreign_keys: bool = False) -> sa.MetaData:
    """Return a MetaData with every contract table.

    `with_foreign_keys` adds the two production constraints of `credit_histories`; leave it off to
    write orphan rows deliberately.
    """
    md = sa.MetaData()
    for table in TABLES:
        cols = [_column(table, c) for c in table.columns]
        args: list = list(cols)
        if with_foreign_keys and table is CREDIT_HISTORIES:
            args.append(sa.ForeignKeyConstraint(["credit_events_id"], ["credit_events.id"]))
            args.append(sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"))
        for i, index_cols in enumerate(table.indexes):
            args.append(sa.Index(f"{table.name}_idx_{i}", *index_cols))
        sa.Table(table.name, md, *args)
    return md


def create_tables(
    engine: sa.Engine, with_foreign_keys: bool = False, drop_first: bool = True
) -> sa.MetaData:
    """Create (after dropping, by default) every contract table at `engine`."""
    md = build_metadata(with_foreign_keys)
    if drop_first:
        md.drop_all(engine)
    md.create_all(engine)
    return md
