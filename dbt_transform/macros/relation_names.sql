{#-
    On DuckDB, `ref()` and `source()` leave the database (the warehouse file's name) out of the
    relations they render, so that the `credits` views keep working when the warehouse file is
    copied, renamed or ATTACHed under another name. Other adapters are unchanged.
-#}
{% macro ref() -%}
    {%- set version = kwargs.get('version') or kwargs.get('v') -%}
    {%- if (varargs | length) == 1 -%}
        {%- set relation = builtins.ref(varargs[0], version=version) -%}
    {%- else -%}
        {%- set relation = builtins.ref(varargs[0], varargs[1], version=version) -%}
    {%- endif -%}
    {{ return(_without_duckdb_database(relation)) }}
{%- endmacro %}

{% macro source(source_name, table_name) -%}
    {{ return(_without_duckdb_database(builtins.source(source_name, table_name))) }}
{%- endmacro %}

{% macro _without_duckdb_database(relation) -%}
    {%- if target.type == 'duckdb' and relation is not string -%}
        {{ return(relation.include(database=False)) }}
    {%- else -%}
        {{ return(relation) }}
    {%- endif -%}
{%- endmacro %}
