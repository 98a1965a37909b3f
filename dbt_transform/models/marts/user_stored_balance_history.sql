{#-
    What the application stored for a user on any past day, next to the ledger's balance that day.
    One row per user and period during which neither changed: a period starts on a day a run first
    read new stored values (snapshots/users_stored_balances) or a day with ledger rows
    (user_credit_daily), from the user's first recorded version on — before it, nothing stored is
    known. The value on day X is the row with valid_from_date <= X < valid_to_date (valid_to_date
    NULL: still so). Stored values fill forward from the latest version recorded on or before the
    day, the ledger's from the latest day with rows on or before it (0 before the first).
-#}
with

stored_versions as (

    -- a user's versions by the UTC day they were recorded; of two runs on one day, the later
    select
        user_id,
        observed_on,
        remaining_credit_amount,
        extra_credits,
        plan_id,
        monthly_credit_amount,
        stored_observed_at
    from (
        select
            user_id,
            cast(dbt_valid_from as date) as observed_on,
            remaining_credit_amount,
            extra_credits,
            plan_id,
            monthly_credit_amount,
            dbt_valid_from as stored_observed_at,
            row_number() over (
                partition by user_id, cast(dbt_valid_from as date)
                order by dbt_valid_from desc
            ) as recency_in_day
        from {{ ref('users_stored_balances') }}
    ) as versions_by_day
    where recency_in_day = 1

),

ledger_days as (

    select
        user_id,
        balance_date,
        closing_subscription_balance,
        closing_purchased_balance,
        closing_balance
    from {{ ref('user_credit_daily') }}
    where user_id in (select user_id from stored_versions)

),

timeline_rows as (

    select
        user_id,
        observed_on as change_date,
        1 as is_stored_change,
        0 as is_ledger_change,
        remaining_credit_amount,
        extra_credits,
        plan_id,
        monthly_credit_amount,
        stored_observed_at,
        cast(null as date) as ledger_balance_date,
        cast(null as {{ dbt.type_bigint() }}) as closing_subscription_balance,
        cast(null as {{ dbt.type_bigint() }}) as closing_purchased_balance,
        cast(null as {{ dbt.type_bigint() }}) as closing_balance
    from stored_versions

    union all

    select
        user_id,
        balance_date,
        0,
        1,
        cast(null as {{ dbt.type_bigint() }}),
        cast(null as {{ dbt.type_bigint() }}),
        cast(null as {{ dbt.type_bigint() }}),
        cast(null as {{ dbt.type_bigint() }}),
        cast(null as {{ dbt.type_timestamp() }}),
        balance_date,
        closing_subscription_balance,
        closing_purchased_balance,
        closing_balance
    from ledger_days

),

change_days as (

    -- at most one stored version and one ledger day per user and day
    select
        user_id,
        change_date,
        max(is_stored_change) as is_stored_change,
        max(is_ledger_change) as is_ledger_change,
        max(remaining_credit_amount) as remaining_credit_amount,
        max(extra_credits) as extra_credits,
        max(plan_id) as plan_id,
        max(monthly_credit_amount) as monthly_credit_amount,
        max(stored_observed_at) as stored_observed_at,
        max(ledger_balance_date) as ledger_balance_date,
        max(closing_subscription_balance) as closing_subscription_balance,
        max(closing_purchased_balance) as closing_purchased_balance,
        max(closing_balance) as closing_balance
    from timeline_rows
    group by user_id, change_date

),

change_days_numbered as (

    -- each day belongs to the latest stored version and the latest ledger day up to it
    select
        user_id,
        change_date,
        remaining_credit_amount,
        extra_credits,
        plan_id,
        monthly_credit_amount,
        stored_observed_at,
        ledger_balance_date,
        closing_subscription_balance,
        closing_purchased_balance,
        closing_balance,
        sum(is_stored_change) over (
            partition by user_id
            order by change_date
            rows between unbounded preceding and current row
        ) as stored_version_number,
        sum(is_ledger_change) over (
            partition by user_id
            order by change_date
            rows between unbounded preceding and current row
        ) as ledger_day_number
    from change_days

),

filled_forward as (

    -- within a version (or ledger day) only its first row carries values: spread them
    select
        user_id,
        change_date,
        stored_version_number,
        max(remaining_credit_amount) over (partition by user_id, stored_version_number)
            as remaining_credit_amount,
        max(extra_credits) over (partition by user_id, stored_version_number) as extra_credits,
        max(plan_id) over (partition by user_id, stored_version_number) as plan_id,
        max(monthly_credit_amount) over (partition by user_id, stored_version_number)
            as monthly_credit_amount,
        max(stored_observed_at) over (partition by user_id, stored_version_number)
            as stored_observed_at,
        max(ledger_balance_date) over (partition by user_id, ledger_day_number)
            as ledger_balance_date,
        max(closing_subscription_balance) over (partition by user_id, ledger_day_number)
            as closing_subscription_balance,
        max(closing_purchased_balance) over (partition by user_id, ledger_day_number)
            as closing_purchased_balance,
        max(closing_balance) over (partition by user_id, ledger_day_number) as closing_balance
    from change_days_numbered

)

select
    user_id,
    change_date as valid_from_date,
    lead(change_date) over (partition by user_id order by change_date) as valid_to_date,
    coalesce(remaining_credit_amount, 0) as stored_subscription_balance,
    extra_credits as stored_purchased_balance,
    coalesce(remaining_credit_amount, 0) + extra_credits as stored_balance,
    plan_id as stored_plan_id,
    monthly_credit_amount as stored_monthly_credit_amount,
    stored_observed_at,
    ledger_balance_date,
    coalesce(closing_subscription_balance, 0) as ledger_subscription_balance,
    coalesce(closing_purchased_balance, 0) as ledger_purchased_balance,
    coalesce(closing_balance, 0) as ledger_balance
from filled_forward
where stored_version_number > 0
