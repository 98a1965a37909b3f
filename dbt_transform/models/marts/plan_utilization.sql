with

replayed_rows as (

    select
        credit_history_id,
        user_id,
        effect,
        service,
        amount,
        balance_date,
        subscription_after,
        forfeited_credits
    from {{ ref('int_credit_replay') }}

),

users as (

    select id as user_id, plan_id from {{ source('raw', 'users') }}

),

plan_prices as (

    select plan_id, plan_tier from {{ ref('int_plan_prices') }}

),

row_plans as (

    select credit_history_id, plan_tier from {{ ref('int_ledger_row_plans') }}

),

current_plans as (

    -- users without any subscription: their current plan (users.plan_id), else none
    select users.user_id, coalesce(plan_prices.plan_tier, 'none') as plan_tier
    from users
    left join plan_prices
        on users.plan_id = plan_prices.plan_id

),

rows_with_plans as (

    select
        replayed_rows.credit_history_id,
        replayed_rows.user_id,
        replayed_rows.effect,
        replayed_rows.service,
        replayed_rows.amount,
        replayed_rows.balance_date,
        replayed_rows.subscription_after,
        replayed_rows.forfeited_credits,
        coalesce(row_plans.plan_tier, current_plans.plan_tier, 'unknown user') as plan_tier
    from replayed_rows
    left join row_plans
        on replayed_rows.credit_history_id = row_plans.credit_history_id
    left join current_plans
        on replayed_rows.user_id = current_plans.user_id

),

rows_with_cycles as (

    -- an allocation cycle runs from one allocation (reset or monthly release) to the next
    select
        user_id,
        effect,
        service,
        amount,
        subscription_after,
        forfeited_credits,
        plan_tier,
        {{ month_of('balance_date') }} as activity_month,
        sum(case
            when effect = 'reset' or (effect = 'add' and service = 'allocation') then 1
            else 0
        end) over (
            partition by user_id
            order by credit_history_id
            rows between unbounded preceding and current row
        ) as allocation_cycle
    from rows_with_plans

),

allocation_cycles as (

    select
        user_id,
        allocation_cycle,
        min(case
            when effect = 'reset' or (effect = 'add' and service = 'allocation')
                then activity_month
        end) as cycle_month,
        -- a cycle counts under the plan its allocation was made on
        min(case
            when effect = 'reset' or (effect = 'add' and service = 'allocation')
                then plan_tier
        end) as plan_tier,
        max(case
            when effect = 'spend' and subscription_after = 0 then 1
            else 0
        end) as is_depleted
    from rows_with_cycles
    where allocation_cycle > 0
    group by user_id, allocation_cycle

),

user_month_depletion as (

    select user_id, plan_tier, cycle_month as activity_month, max(is_depleted) as is_depleted
    from allocation_cycles
    group by user_id, plan_tier, cycle_month

),

user_months as (

    select
        user_id,
        plan_tier,
        activity_month,
        cast(sum(case
            when effect = 'reset' or (effect = 'add' and service = 'allocation') then amount
            else 0
        end) as {{ dbt.type_bigint() }}) as credits_allocated,
        cast(sum(case when effect = 'spend' then amount else 0 end) as {{ dbt.type_bigint() }}) as credits_consumed,
        cast(sum(forfeited_credits) as {{ dbt.type_bigint() }}) as credits_forfeited
    from rows_with_cycles
    group by user_id, plan_tier, activity_month

),

user_months_with_plans as (

    select
        user_months.plan_tier,
        user_months.activity_month,
        user_months.credits_allocated,
        user_months.credits_consumed,
        user_months.credits_forfeited,
        {{ safe_divide('user_months.credits_consumed', 'user_months.credits_allocated') }}
            as utilization,
        user_month_depletion.is_depleted
    from user_months
    left join user_month_depletion
        on user_months.user_id = user_month_depletion.user_id
        and user_months.plan_tier = user_month_depletion.plan_tier
        and user_months.activity_month = user_month_depletion.activity_month

)

select
    plan_tier,
    activity_month,
    count(*) as users,
    cast(sum(case when credits_allocated > 0 then 1 else 0 end) as {{ dbt.type_bigint() }})
        as users_allocated,
    cast(sum(credits_allocated) as {{ dbt.type_bigint() }}) as credits_allocated,
    cast(sum(credits_consumed) as {{ dbt.type_bigint() }}) as credits_consumed,
    {{ safe_divide('sum(credits_consumed)', 'sum(credits_allocated)') }} as utilization_rate,
    {{ percentile('utilization', 0.25) }} as utilization_p25,
    {{ percentile('utilization', 0.5) }} as utilization_median,
    {{ percentile('utilization', 0.75) }} as utilization_p75,
    cast(sum(case when is_depleted = 1 then 1 else 0 end) as {{ dbt.type_bigint() }})
        as users_depleted_before_renewal,
    {{ safe_divide(
        'sum(case when is_depleted = 1 then 1 else 0 end)',
        'sum(case when is_depleted is not null then 1 else 0 end)'
    ) }} as share_depleted_before_renewal,
    cast(sum(credits_forfeited) as {{ dbt.type_bigint() }}) as credits_forfeited,
    {{ safe_divide('sum(credits_forfeited)', 'sum(credits_allocated)') }} as breakage_rate
from user_months_with_plans
group by plan_tier, activity_month
