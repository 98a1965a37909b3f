{#-
    Bookkeeping of the incremental replay (int_credit_replay_delta, int_credit_replay,
    marts.user_credit_daily), in one place.

    Every row the replay (re)computes is appended to int_credit_replay_delta with the time of the
    dbt invocation that computed it (`replayed_at`): the delta is a log of the replay's runs.
    int_credit_replay takes in the rows of this invocation; the daily mart takes in every run it
    has not seen yet (the log after its own watermark, the newest `replayed_at` it stores), so
    a mart build that failed or was skipped is caught up by the next one instead of being lost.
-#}

{#-
    A UTC datetime as a timestamp literal, from integer microseconds: a number survives every SQL
    dialect and translation layer exactly, where timestamp strings get reinterpreted.
-#}
{% macro timestamp_literal(value) -%}
    {%- set aware = value if value.tzinfo is not none else value.replace(tzinfo=modules.pytz.utc) -%}
    {%- set micros = (aware.timestamp() * 1000000) | round | int -%}
    {{ return(adapter.dispatch('timestamp_from_micros', 'credits_transform')(micros)) }}
{%- endmacro %}

{% macro default__timestamp_from_micros(micros) -%}
    {{ return('make_timestamp(' ~ micros ~ ')') }}
{%- endmacro %}

{% macro bigquery__timestamp_from_micros(micros) -%}
    {{ return('timestamp_micros(' ~ micros ~ ')') }}
{%- endmacro %}

{#- The time of this dbt invocation, as a timestamp literal (the same for every model of it). -#}
{% macro replay_run_timestamp() -%}
    {{ return(timestamp_literal(run_started_at)) }}
{%- endmacro %}

{#- Its UTC day, as a date literal: the log's partition (BigQuery prunes on a literal). -#}
{% macro replay_run_day() -%}
    cast('{{ run_started_at.strftime("%Y-%m-%d") }}' as date)
{%- endmacro %}

{#- The log's rows of this invocation (on its own partition). -#}
{% macro rows_of_this_replay_run() -%}
    replayed_on = {{ replay_run_day() }} and replayed_at = {{ replay_run_timestamp() }}
{%- endmacro %}

{#- A date literal both warehouses read. -#}
{% macro date_literal(value) -%}
    cast('{{ value }}' as date)
{%- endmacro %}

{#-
    The daily mart's watermark: the newest replay run it has taken in (`at`, a timestamp literal,
    and `day`, its date), or none on a full build (or an empty mart). Read before the run's
    pre-hook changes the mart.
-#}
{% macro daily_mart_watermark() -%}
    {%- if not execute or not is_incremental() -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set newest = run_query('select max(replayed_at) from ' ~ this).columns[0].values()[0] -%}
    {%- if newest is none -%}
        {{ return(none) }}
    {%- endif -%}
    {{ return({'at': timestamp_literal(newest), 'day': date_literal(newest.strftime('%Y-%m-%d'))}) }}
{%- endmacro %}

{#-
    The users whose replayed rows changed in the runs after `watermark`, each with the first day
    those changes touch (a row that moved from one day to another counts on both), as a select.
-#}
{% macro touched_users_since(watermark) -%}
    select
        user_id,
        min(
            case
                when replaced_balance_date < balance_date then replaced_balance_date
                else balance_date
            end
        ) as first_touched_day
    from {{ ref('int_credit_replay_delta') }}
    where replayed_on >= {{ watermark.day }} and replayed_at > {{ watermark.at }}
    group by user_id
{%- endmacro %}

{#- The first day any of those users is touched, as a date literal (none: nothing to do). -#}
{% macro first_touched_day_since(watermark) -%}
    {%- set first = run_query(
        'select cast(min(first_touched_day) as ' ~ dbt.type_string() ~ ') from ('
        ~ touched_users_since(watermark) ~ ') as touched_users'
    ).columns[0].values()[0] -%}
    {{ return(none if first is none else date_literal(first)) }}
{%- endmacro %}

{#-
    The pre-hook of marts.user_credit_daily (an incremental run): delete the stored days the run
    recomputes, every day of a touched user from the user's first touched day. On DuckDB it runs
    in the same transaction as the append. BigQuery has none: if the append then fails, the mart
    keeps fewer rows and an older watermark, so the next run recomputes those users again; the
    literal first day lets BigQuery prune the partitions it deletes from.
-#}
{% macro delete_touched_user_days() -%}
    {%- set watermark = daily_mart_watermark() -%}
    {%- if watermark is not none -%}
        {%- set first_day = first_touched_day_since(watermark) -%}
        {%- if first_day is not none -%}
            delete from {{ this }} as stored_days
            where stored_days.balance_date >= {{ first_day }}
                and exists (
                    select 1
                    from ({{ touched_users_since(watermark) }}) as touched_users
                    where touched_users.user_id = stored_days.user_id
                        and stored_days.balance_date >= touched_users.first_touched_day
                )
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}

{#-
    The days int_credit_replay stores the rows this run replaces on, as a predicate on the merge's
    target: BigQuery then reads only those partitions instead of the whole table. Rows new to the
    table match nothing, so with no replaced row the predicate is false and the target is not read.
-#}
{% macro replaced_days_predicate(target_alias) -%}
    {%- set days = run_query(
        'select distinct cast(replaced_balance_date as ' ~ dbt.type_string() ~ ') from '
        ~ ref('int_credit_replay_delta')
        ~ ' where ' ~ rows_of_this_replay_run()
        ~ ' and replaced_balance_date is not null order by 1'
    ).columns[0].values() -%}
    {%- if days | length == 0 -%}
        {{ return('false') }}
    {%- endif -%}
    {%- set literals = [] -%}
    {%- for day in days -%}
        {%- do literals.append(date_literal(day)) -%}
    {%- endfor -%}
    {{ return(target_alias ~ '.balance_date in (' ~ literals | join(', ') ~ ')') }}
{%- endmacro %}

{#-
    dbt's merge on BigQuery, with the replaced days of int_credit_replay as a partition filter on
    the target when the model asks for it (`meta: prune_merge_to_replaced_days`). Why here: the
    days are known only while the run executes, and a model's `incremental_predicates` are fixed
    when the project is parsed.
-#}
{% macro bigquery__get_merge_sql(target, source, unique_key, dest_columns, incremental_predicates=none) -%}
    {%- set predicates = [] if incremental_predicates is none else [] + incremental_predicates -%}
    {%- if config.get('meta', {}).get('prune_merge_to_replaced_days') -%}
        {%- do predicates.append(replaced_days_predicate('DBT_INTERNAL_DEST')) -%}
    {%- endif -%}
    {{ return(default__get_merge_sql(target, source, unique_key, dest_columns, predicates)) }}
{%- endmacro %}
