{#-
    The replayed ledger (int_credit_replay_delta has the replay itself), kept incrementally: each
    run takes in the rows the delta (re)computed in this dbt invocation, replacing their stored
    copies by credit_history_id. A full run (first build or --full-refresh) takes the newest
    version of every row in the delta's log.

    On BigQuery the table is partitioned by balance_date and clustered by user_id; the run is a
    merge on credit_history_id (exact: a row that moves to another day is updated in place, no
    stale copy is left on the old day) whose target is narrowed to the days the replaced rows are
    stored on (meta `prune_merge_to_replaced_days`, macros/incremental_runs.sql): a day of new rows
    reads no stored partition at all. On DuckDB it is a delete+insert on credit_history_id.
-#}
{{ config(
    materialized='incremental',
    unique_key='credit_history_id',
    incremental_strategy='merge' if target.type == 'bigquery' else 'delete+insert',
    partition_by={'field': 'balance_date', 'data_type': 'date', 'granularity': 'day'}
        if target.type == 'bigquery' else none,
    cluster_by=['user_id'] if target.type == 'bigquery' else none,
    meta={'prune_merge_to_replaced_days': true},
    on_schema_change='fail',
) }}

{%- set replay_columns = [
    'credit_history_id', 'user_id', 'event_name', 'effect', 'service', 'creditable_type',
    'creditable_id', 'amount', 'recorded_pool', 'created_at', 'balance_date', 'user_row_number',
    'subscription_before', 'purchased_before', 'subscription_after', 'purchased_after',
    'balance_after', 'forfeited_credits', 'written_off_credits', 'replayed_at',
] %}
with

replayed_rows as (

    select {{ replay_columns | join(', ') }}
    from {{ ref('int_credit_replay_delta') }}
    {%- if is_incremental() %}
    where {{ rows_of_this_replay_run() }}
    {%- endif %}

),

newest_versions as (

    select
        {{ replay_columns | join(', ') }},
        row_number() over (
            partition by credit_history_id
            order by replayed_at desc
        ) as version_from_newest
    from replayed_rows

)

select
    {%- for column in replay_columns %}
    {{ column }}{{ ',' if not loop.last }}
    {%- endfor %}
from newest_versions
where version_from_newest = 1
