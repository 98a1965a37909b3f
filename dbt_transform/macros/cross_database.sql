{#-
    The few portable helpers dbt's own cross-database macros do not provide. Each dispatches on
    the adapter: DuckDB (default) and BigQuery (production).
-#}

{#- A 64-bit float: dbt.type_float() is a 32-bit FLOAT on DuckDB. -#}
{% macro type_double() -%}
    {{ return(adapter.dispatch('type_double', 'credits_transform')()) }}
{%- endmacro %}

{% macro default__type_double() -%}
    double
{%- endmacro %}

{% macro bigquery__type_double() -%}
    float64
{%- endmacro %}


{#-
    A continuous percentile as an aggregate. BigQuery has percentile_cont only as a window function:
    there it runs over the group's values, gathered with array_agg (exact, as on DuckDB; NULLs are
    ignored on both, and a group without values gives NULL).
-#}
{% macro percentile(expression, fraction) -%}
    {{ return(adapter.dispatch('percentile', 'credits_transform')(expression, fraction)) }}
{%- endmacro %}

{% macro default__percentile(expression, fraction) -%}
    percentile_cont({{ fraction }}) within group (order by {{ expression }})
{%- endmacro %}

{% macro bigquery__percentile(expression, fraction) -%}
    (
        select percentile_cont(cast(percentile_value as float64), {{ fraction }}) over ()
        from unnest(array_agg({{ expression }} ignore nulls)) as percentile_value
        limit 1
    )
{%- endmacro %}


{#- Division that yields NULL instead of failing (or being infinite) on a zero denominator. -#}
{% macro safe_divide(numerator, denominator) -%}
    case
        when {{ denominator }} is null or {{ denominator }} = 0 then null
        else cast({{ numerator }} as {{ type_double() }}) / cast({{ denominator }} as {{ type_double() }})
    end
{%- endmacro %}


{#- The first day of the month of a date or timestamp, as a DATE. -#}
{% macro month_of(expression) -%}
    cast({{ dbt.date_trunc('month', expression) }} as date)
{%- endmacro %}


{#- dbt.dateadd on a timestamp, kept a timestamp (BigQuery's dateadd returns a DATETIME). -#}
{% macro shift_timestamp(datepart, interval, timestamp_expression) -%}
    cast({{ dbt.dateadd(datepart, interval, timestamp_expression) }} as {{ dbt.type_timestamp() }})
{%- endmacro %}


{#-
    The value of `expression` on the group's row with the largest `order_by` (unique in the group):
    an aggregate, so a "last row of the group" needs no ranking window and no join back. Never
    given NULL values here (the marts pass NOT NULL columns): BigQuery's array_agg refuses them.
-#}
{% macro last_by(expression, order_by) -%}
    {{ return(adapter.dispatch('last_by', 'credits_transform')(expression, order_by)) }}
{%- endmacro %}

{% macro default__last_by(expression, order_by) -%}
    arg_max({{ expression }}, {{ order_by }})
{%- endmacro %}

{% macro bigquery__last_by(expression, order_by) -%}
    array_agg({{ expression }} order by {{ order_by }} desc limit 1)[offset(0)]
{%- endmacro %}
