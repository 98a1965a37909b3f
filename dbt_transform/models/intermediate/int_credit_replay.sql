{#-
    The ledger replay, one row per ledger row: the reconciliation's own replay (the one replay,
    credits_pipeline/ledger/replay.py), which publishes both pools around every row as
    credits.ledger_row_pools (source `replay`), with the row's ledger columns and the day it
    counts on. dbt does not replay the ledger: a balance here is, by construction, the balance the
    reconciliation reports (marts.user_balance_reconciliation).

    The replayed rows drive the join: a ledger row the reconciliation has not replayed yet is not
    here either, so every mart built from this model describes exactly the ledger the reports
    describe. Built by the marts step, after the reconciliation.

    Kept per user on DuckDB (incremental, `macros/kept_per_user.sql`): a daily run appends the new
    rows of the users the reconciliation resumed (their kept rows stay as they were), rebuilds
    whole the users whose kept rows may no longer hold, and leaves the others alone; the result
    equals a build from scratch (credits_pipeline_tests/test_one_replay.py, test_end_to_end.py and
    test_late_rows.py compare them). A user is rebuilt when
    - the reconciliation replayed its whole past again (the count or highest replay_sequence of
      its rows numbered by runs this model saw moved: late rows, a row rewritten or deleted in any
      column this model reads, a changed event catalog, which replays every row);
    - a new row has an id at or below its highest kept one;
    - one of its rows has no created_at or a day after the last day kept: the day such a row
      counts on follows the cut-off.
    An appended row's day goes on from the user's last kept day (its rows' days never go back).
    Users the reconciliation no longer has are deleted (the post-hook). On BigQuery the model is
    rebuilt whole (a table): a rebuild there costs bytes scanned, which the marts' partitioning
    already bounds, not a worker's time. `--full-refresh` rebuilds it everywhere.
-#}
{%- set kept_per_user = target.type == 'duckdb' -%}
{#- On BigQuery partitioned by day and clustered by user, for the readers' pruning. -#}
{{ config(
    materialized='incremental' if kept_per_user else 'table',
    incremental_strategy='append' if kept_per_user else none,
    on_schema_change='append_new_columns' if kept_per_user else none,
    pre_hook=["{{ delete_replaced_rows(source('replay', 'ledger_row_pools'), this) }}"]
        if kept_per_user else [],
    post_hook=["{{ delete_vanished_key_groups('user_id', source('replay', 'ledger_row_pools')) }}"]
        if kept_per_user else [],
    partition_by={'field': 'balance_date', 'data_type': 'date', 'granularity': 'day'}
        if target.type == 'bigquery' else none,
    cluster_by=['user_id'] if target.type == 'bigquery' else none,
) }}
{#- After the pre-hook, the kept rows are those of the users extended or left alone. -#}
{%- set resume = kept_per_user_resumes() -%}
with
{% if resume %}
kept_users as (

    select
        user_id,
        max(credit_history_id) as last_credit_history_id,
        max(balance_date) as last_balance_date
    from {{ this }}
    group by user_id

),
{% endif %}
replayed_pools as (

    select
        pools.credit_history_id,
        pools.user_row_number,
        pools.subscription_before,
        pools.purchased_before,
        pools.subscription_after,
        pools.purchased_after,
        pools.forfeited_credits,
        pools.written_off_credits,
        pools.replay_sequence,
        {%- if resume %}
        kept_users.last_balance_date as kept_last_balance_date
        {%- else %}
        cast(null as date) as kept_last_balance_date
        {%- endif %}
    from {{ source('replay', 'ledger_row_pools') }} as pools
    {%- if resume %}
    -- a kept user's rows after its kept ones; every row of a user not kept
    left join kept_users
        on pools.user_id is not distinct from kept_users.user_id
    where kept_users.last_credit_history_id is null
        or pools.credit_history_id > kept_users.last_credit_history_id
    {%- endif %}

),

ledger_rows as (

    select
        credit_history_id,
        user_id,
        event_name,
        effect,
        service,
        creditable_type,
        creditable_id,
        unsigned_amount as amount,
        cast(previous_amount as {{ dbt.type_bigint() }}) as recorded_pool,
        created_at
    from {{ ref('credit_histories') }}

),

extraction_cutoff as (

    select cast(cutoff_at as date) as cutoff_date
    from {{ source('raw', 'extraction_cutoff') }}

),

replayed_rows as (

    select
        ledger_rows.credit_history_id,
        ledger_rows.user_id,
        ledger_rows.event_name,
        ledger_rows.effect,
        ledger_rows.service,
        ledger_rows.creditable_type,
        ledger_rows.creditable_id,
        ledger_rows.amount,
        ledger_rows.recorded_pool,
        ledger_rows.created_at,
        replayed_pools.user_row_number,
        replayed_pools.subscription_before,
        replayed_pools.purchased_before,
        replayed_pools.subscription_after,
        replayed_pools.purchased_after,
        replayed_pools.forfeited_credits,
        replayed_pools.written_off_credits,
        replayed_pools.replay_sequence,
        replayed_pools.kept_last_balance_date,
        case
            when ledger_rows.created_at is null then null
            when cast(ledger_rows.created_at as date) > extraction_cutoff.cutoff_date
                then extraction_cutoff.cutoff_date
            else cast(ledger_rows.created_at as date)
        end as capped_created_date,
        extraction_cutoff.cutoff_date
    from replayed_pools
    inner join ledger_rows
        on replayed_pools.credit_history_id = ledger_rows.credit_history_id
    cross join extraction_cutoff

),

rows_with_days as (

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
        user_row_number,
        subscription_before,
        purchased_before,
        subscription_after,
        purchased_after,
        forfeited_credits,
        written_off_credits,
        replay_sequence,
        kept_last_balance_date,
        cutoff_date,
        max(capped_created_date) over (
            partition by user_id
            order by credit_history_id
            rows between unbounded preceding and current row
        ) as running_created_date,
        min(capped_created_date) over (partition by user_id) as first_created_date
    from replayed_rows

)

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
    case
        when kept_last_balance_date is null
            then coalesce(running_created_date, first_created_date, cutoff_date)
        -- an appended row: the day goes on from the user's last kept day
        when running_created_date is null or running_created_date < kept_last_balance_date
            then kept_last_balance_date
        else running_created_date
    end as balance_date,
    user_row_number,
    subscription_before,
    purchased_before,
    subscription_after,
    purchased_after,
    subscription_after + purchased_after as balance_after,
    forfeited_credits,
    written_off_credits,
    replay_sequence
from rows_with_days
