{#-
    How an enforced model contract becomes a BigQuery table.

    dbt-bigquery renders a contracted table as one typed CTAS,
        create or replace table t (col type, ...) partition by ... options(...) as ( select ... );
    and BigQuery reads that statement the same with or without the parentheses around the query.
    The BigQuery emulator the tests run on (bqemulator, on DuckDB) does not: DuckDB's grammar has
    no CTAS with a column list, so the emulator rewrites `create table t (schema) as select ...`
    into a CTAS whose projections are cast to the declared types — but only when the query is a
    bare select. dbt's parenthesized query parses as a subquery, the rewrite is skipped, and DuckDB
    fails with `Parser Error: syntax error at or near "AS"`.

    So contracted tables are written here with the same parts dbt uses (the pre-flight check that
    the select's column names and types equal the contract's, the typed column list with any
    constraints, partitioning, clustering and table options) and the query unparenthesized. On
    BigQuery the statement means exactly what dbt's does. Everything else (no contract, Python
    models, ingestion-time partitioning, Iceberg tables) is dbt-bigquery's own macro, unchanged.
-#}
{% macro bigquery__create_table_as(temporary, relation, compiled_code, language='sql') -%}
    {%- set partition_config = adapter.parse_partition_by(config.get('partition_by', none)) -%}
    {%- set contract_config = config.get('contract') -%}
    {%- set catalog_relation = adapter.build_catalog_relation(config.model) -%}
    {%- if language != 'sql'
        or not contract_config.enforced
        or partition_config.time_ingestion_partitioning
        or catalog_relation.table_format == 'iceberg' -%}
        {{ return(dbt.bigquery__create_table_as(temporary, relation, compiled_code, language)) }}
    {%- endif -%}
    {%- set sql_header = config.get('sql_header', none) -%}
    {{ sql_header if sql_header is not none }}
    create or replace table {{ relation }}
        {{ get_assert_columns_equivalent(compiled_code) }}
        {{ get_table_columns_and_constraints() }}
    {{ partition_by(partition_config) }}
    {{ cluster_by(config.get('cluster_by', none)) }}
    {{ bigquery_table_options(config, model, temporary) }}
    as
    {{ get_select_subquery(compiled_code) }};
{%- endmacro %}
