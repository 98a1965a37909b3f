{#-
    The contract's ledger replay (section 2, with "continuing after a row" of section 5), one row
    per ledger row, in SQL.

    The subscription pool needs no recursion: before every reset, add or spend row it restarts from
    the row's recorded previous_amount, so the pool after the row is a function of that row alone
    and of the purchased pool before it. The purchased pool is the only sequential state, and only
    two kinds of row move it: purchase rows (which set it to their recorded snapshot) and spend rows
    the recorded subscription pool cannot cover. A recursive CTE walks just those rows, per user;
    window functions carry both pools to every other row.
-#}
with recursive

extraction_cutoff as (

    select cast(cutoff_at as date) as cutoff_date
    from {{ source('raw', 'extraction_cutoff') }}

),

ledger as (

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

purchased_pool_moves as (

    select
        user_id,
        credit_history_id,
        effect,
        amount,
        recorded_pool,
        row_number() over (partition by user_id order by credit_history_id) as move_number
    from ledger
    where effect = 'purchase'
        or (effect = 'spend' and recorded_pool < amount)

),

purchased_pool_replay as (

    select
        user_id,
        move_number,
        credit_history_id,
        cast(0 as {{ dbt.type_bigint() }}) as purchased_before,
        -- from an empty pool a spend leaves it empty: max(0 - (amount - recorded_pool), 0) = 0
        cast(
            case when effect = 'purchase' then recorded_pool else 0 end
        as {{ dbt.type_bigint() }}) as purchased_after
    from purchased_pool_moves
    where move_number = 1

    union all

    select
        next_move.user_id,
        next_move.move_number,
        next_move.credit_history_id,
        replayed.purchased_after as purchased_before,
        cast(
            case
                when next_move.effect = 'purchase' then next_move.recorded_pool
                when replayed.purchased_after >= next_move.amount
                    then replayed.purchased_after - next_move.amount
                when replayed.purchased_after - (next_move.amount - next_move.recorded_pool) > 0
                    then replayed.purchased_after - (next_move.amount - next_move.recorded_pool)
                else 0
            end
        as {{ dbt.type_bigint() }}) as purchased_after
    from purchased_pool_replay as replayed
    inner join purchased_pool_moves as next_move
        on next_move.user_id = replayed.user_id
        and next_move.move_number = replayed.move_number + 1

),

ledger_with_purchased_pool as (

    select
        ledger.*,
        purchased_pool_replay.purchased_before as move_purchased_before,
        coalesce(
            last_value(purchased_pool_replay.purchased_after ignore nulls) over (
                partition by ledger.user_id
                order by ledger.credit_history_id
                rows between unbounded preceding and current row
            ),
            0
        ) as purchased_after
    from ledger
    left join purchased_pool_replay
        on ledger.credit_history_id = purchased_pool_replay.credit_history_id
        and ledger.user_id = purchased_pool_replay.user_id

),

ledger_with_row_moves as (

    select
        *,
        coalesce(move_purchased_before, purchased_after) as purchased_before,
        case
            when effect = 'reset' then amount
            when effect = 'add' then recorded_pool + amount
            when effect = 'spend' and recorded_pool >= amount then recorded_pool - amount
            when effect = 'spend' and coalesce(move_purchased_before, purchased_after) >= amount
                then recorded_pool
            when effect = 'spend' then 0
        end as row_subscription_after,
        case when effect = 'reset' then recorded_pool else 0 end as forfeited_credits,
        case
            when effect = 'spend'
                and amount > recorded_pool + coalesce(move_purchased_before, purchased_after)
                then amount - recorded_pool - coalesce(move_purchased_before, purchased_after)
            else 0
        end as written_off_credits,
        case
            when created_at is null then null
            when cast(created_at as date) > extraction_cutoff.cutoff_date
                then extraction_cutoff.cutoff_date
            else cast(created_at as date)
        end as capped_created_date,
        extraction_cutoff.cutoff_date
    from ledger_with_purchased_pool
    cross join extraction_cutoff

),

ledger_with_pools as (

    select
        *,
        coalesce(
            last_value(row_subscription_after ignore nulls) over (
                partition by user_id
                order by credit_history_id
                rows between unbounded preceding and current row
            ),
            0
        ) as subscription_after,
        max(capped_created_date) over (
            partition by user_id
            order by credit_history_id
            rows between unbounded preceding and current row
        ) as running_created_date,
        min(capped_created_date) over (partition by user_id) as first_created_date
    from ledger_with_row_moves

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
    coalesce(running_created_date, first_created_date, cutoff_date) as balance_date,
    row_number() over (partition by user_id order by credit_history_id) as user_row_number,
    case when effect in ('reset', 'add', 'spend') then recorded_pool end as subscription_before,
    purchased_before,
    subscription_after,
    purchased_after,
    subscription_after + purchased_after as balance_after,
    forfeited_credits,
    written_off_credits
from ledger_with_pools
