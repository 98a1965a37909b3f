{#-
    On DuckDB a view stores its SQL text, and dbt renders every relation with the database — the
    warehouse file's name (`"warehouse"."raw"."credit_histories"`). A view created that way stops
    working when the file is copied, renamed or ATTACHed under another name. So the `credits` views
    are created with the database left out of the relations they read; nothing else changes: the
    compiled SQL (what Dagster's column lineage parses, matching relations by their full names) and
    every table keep dbt's names. Other adapters are unchanged.
-#}
{% macro duckdb__create_view_as(relation, sql) -%}
    {%- set database_prefix = adapter.quote(relation.database) ~ '.' -%}
    {{ return(dbt.duckdb__create_view_as(relation, sql | replace(database_prefix, ''))) }}
{%- endmacro %}
