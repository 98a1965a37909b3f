{#-
    The replayed ledger (int_credit_replay_delta has the replay itself), kept incrementally: each
    run takes in the rows the delta (re)computed, replacing their stored copies by
    credit_history_id (a full run, first build or --full-refresh, takes in the delta's full
    replay).

    On BigQuery the table is partitioned by balance_date and clustered by user_id; the run is a
    merge on credit_history_id (exact: a row that moves to another day is updated in place, no
    stale copy is left on the old day). Its cost is the merge's scan of the target, see
    docs/deployment.md ("Bytes a daily run scans") for what this means and what would narrow it. On DuckDB it is a delete+insert on credit_history_id.
-#}
{{ config(
    materialized='incremental',
    unique_key='credit_history_id',
    incremental_strategy='merge' if target.type == 'bigquery' else 'delete+insert',
    partition_by={'field': 'balance_date', 'data_type': 'date', 'granularity': 'day'}
        if target.type == 'bigquery' else none,
    cluster_by=['user_id'] if target.type == 'bigquery' else none,
    on_schema_change='ignore',
) }}


select
    credit_history_id,
    user_id,
    event_name,
    effect,
    service,
    creditable_type,
    creditable_id,
    amount,
    recorded_pool,
    created_at,
    balance_date,
    user_row_number,
    subscription_before,
    purchased_before,
    subscription_after,
    purchased_after,
    balance_after,
    forfeited_credits,
    written_off_credits
from {{ ref('int_credit_replay_delta') }}
