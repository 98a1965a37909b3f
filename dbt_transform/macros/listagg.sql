{#-
    `dbt.listagg` on DuckDB, skipping NULLs before its limit as BigQuery's `string_agg(... limit n)`
    does. dbt-duckdb's own version slices the ordered `array_agg` first and drops the NULLs after,
    so a measure that is NULL for some rows (`case when <condition> then id end`) listed fewer ids
    than the limit, or none, on DuckDB and the first n matching ids on BigQuery: two engines, two
    answers for the same mart. Found by marts.usage_risk_signals, whose evidence lists row ids.
    dbt's dispatch takes a root project's `duckdb__listagg` before the adapter's.
-#}
{% macro duckdb__listagg(measure, delimiter_text, order_by_clause, limit_num) -%}
    {%- if limit_num -%}
    list_aggr(
        (array_agg({{ measure }} {{ order_by_clause or '' }})
            filter (where {{ measure }} is not null))[1:{{ limit_num }}],
        'string_agg',
        {{ delimiter_text }}
    )
    {%- else -%}
    string_agg({{ measure }}, {{ delimiter_text }} {{ order_by_clause or '' }})
    {%- endif -%}
{%- endmacro %}
