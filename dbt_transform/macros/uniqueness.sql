{#-
    Uniqueness tests on DuckDB by sorting instead of grouping. Why: dbt's `unique` groups every
    row by the column and keeps the groups counted twice; on DuckDB that is a hash aggregate with
    as many groups as the model has rows (credits.credit_histories at 100,000 users: 6.4 M groups,
    5.2 s), run by every build, daily. Sorting the column and comparing each value with the one
    before finds the same duplicates in 0.6 s (bench/end_to_end.py's warehouse, 1 GiB limit). The
    failing rows are the ones dbt's test returns: each duplicated value once, with the number of
    rows that carry it. Other engines keep dbt's own query (on BigQuery an ordered window over a
    whole table runs on one worker). `unique_combination` (tests/generic) is the same for several columns.
-#}
{% macro duckdb__test_unique(model, column_name) -%}
with ordered_values as (

    select
        {{ column_name }} as unique_field,
        lag({{ column_name }}) over (order by {{ column_name }}) as previous_field
    from {{ model }}

)

-- NULLs sort together but never compare equal: no NULL is a duplicate, as in dbt's test, without
-- a `where ... is not null`, which DuckDB pushes into a view and then cannot sort as cheaply
-- (credit_histories at 100,000 users: 4.7 s with it, 0.6 s without)
select unique_field, count(*) + 1 as n_records
from ordered_values
where unique_field = previous_field
group by unique_field
{%- endmacro %}


{% macro unique_combination_rows(model, columns) -%}
    {{ return(adapter.dispatch('unique_combination_rows', 'credits_transform')(model, columns)) }}
{%- endmacro %}


{% macro default__unique_combination_rows(model, columns) -%}
with grain as (

    select
        {{ columns | join(', ') }},
        count(*) as row_count
    from {{ model }}
    group by {{ columns | join(', ') }}

)

select *
from grain
where row_count > 1
{%- endmacro %}


{#- Each row against the one before it in the order of `columns`: NULLs compare equal, as they
    group together in the default's `group by`. -#}
{% macro duckdb__unique_combination_rows(model, columns) -%}
{%- set ordering = columns | join(', ') -%}
with ordered_rows as (

    select
        {{ ordering }},
        {%- for column in columns %}
        lag({{ column }}) over (order by {{ ordering }}) as previous_{{ loop.index }},
        {%- endfor %}
        lag(true, 1, false) over (order by {{ ordering }}) as has_previous
    from {{ model }}

)

select {{ ordering }}, count(*) + 1 as row_count
from ordered_rows
where has_previous
    {%- for column in columns %}
    and {{ column }} is not distinct from previous_{{ loop.index }}
    {%- endfor %}
group by {{ ordering }}
{%- endmacro %}
