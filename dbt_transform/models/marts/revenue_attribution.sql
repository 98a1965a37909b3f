with

extraction_cutoff as (

    select cutoff_at, {{ month_of('cutoff_at') }} as cutoff_month
    from {{ source('raw', 'extraction_cutoff') }}

),

replayed_rows as (

    select
        credit_history_id,
        user_id,
        effect,
        service,
        amount,
        purchased_after,
        {{ month_of('balance_date') }} as activity_month
    from {{ ref('int_credit_replay') }}

),

plan_prices as (

    select plan_id, stripe_price_id, price, monthly_price from {{ ref('int_plan_prices') }}

),

paid_subscriptions as (

    -- a subscription is paid from the end of its trial (or its creation) until it ends
    select
        subscriptions.id as subscription_id,
        plan_prices.monthly_price,
        {{ month_of(
            'case when subscriptions.trial_ends_at > subscriptions.created_at'
            ~ ' then subscriptions.trial_ends_at else subscriptions.created_at end'
        ) }} as first_paid_month,
        subscriptions.ends_at
    from {{ source('raw', 'subscriptions') }} as subscriptions
    inner join plan_prices
        on subscriptions.stripe_price = plan_prices.stripe_price_id
    where subscriptions.stripe_status not in ('incomplete', 'incomplete_expired')
        and subscriptions.created_at is not null
        and plan_prices.monthly_price is not null

),

extra_credit_purchases as (

    select
        {{ month_of('purchases.created_at') }} as revenue_month,
        plan_prices.price
    from {{ source('raw', 'purchases') }} as purchases
    inner join plan_prices
        on purchases.plan_id = plan_prices.plan_id
    cross join extraction_cutoff
    where purchases.status = 'succeeded'
        and purchases.created_at <= extraction_cutoff.cutoff_at

),

first_month as (

    select min(first_month) as first_month
    from (
        select min(first_paid_month) as first_month from paid_subscriptions
        union all
        select min(revenue_month) from extra_credit_purchases
        union all
        select min(activity_month) from replayed_rows
    ) as candidate_months

),

months as (

    select
        cast(
            {{ dbt.dateadd('month', 'month_offsets.generated_number - 1', 'first_month.first_month') }}
        as date) as revenue_month
    from ({{ dbt.generate_series(600) }}) as month_offsets
    cross join first_month

),

report_months as (

    select months.revenue_month
    from months
    cross join extraction_cutoff
    where months.revenue_month <= extraction_cutoff.cutoff_month

),

subscription_revenue as (

    select
        report_months.revenue_month,
        sum(paid_subscriptions.monthly_price) as subscription_revenue
    from report_months
    inner join paid_subscriptions
        on paid_subscriptions.first_paid_month <= report_months.revenue_month
        and (
            paid_subscriptions.ends_at is null
            or cast(paid_subscriptions.ends_at as date) > report_months.revenue_month
        )
    group by report_months.revenue_month

),

extra_credit_revenue as (

    select revenue_month, sum(price) as extra_credit_revenue
    from extra_credit_purchases
    group by revenue_month

),

monthly_revenue as (

    select
        report_months.revenue_month,
        coalesce(subscription_revenue.subscription_revenue, 0) as subscription_revenue,
        coalesce(extra_credit_revenue.extra_credit_revenue, 0) as extra_credit_revenue
    from report_months
    left join subscription_revenue
        on report_months.revenue_month = subscription_revenue.revenue_month
    left join extra_credit_revenue
        on report_months.revenue_month = extra_credit_revenue.revenue_month

),

service_consumption as (

    select
        activity_month as revenue_month,
        coalesce(service, 'unknown') as service,
        cast(sum(amount) as {{ dbt.type_bigint() }}) as credits_consumed
    from replayed_rows
    where effect = 'spend'
    group by activity_month, coalesce(service, 'unknown')

),

monthly_consumption as (

    select revenue_month, cast(sum(credits_consumed) as {{ dbt.type_bigint() }}) as month_credits_consumed
    from service_consumption
    group by revenue_month

),

attribution_rows as (

    -- every service that consumed credits in a month; a month with revenue and no consumption
    -- keeps its revenue on one `unattributed` row
    select service_consumption.revenue_month, service_consumption.service,
        service_consumption.credits_consumed
    from service_consumption
    union all
    select monthly_revenue.revenue_month, 'unattributed', 0
    from monthly_revenue
    left join monthly_consumption
        on monthly_revenue.revenue_month = monthly_consumption.revenue_month
    where coalesce(monthly_consumption.month_credits_consumed, 0) = 0
        and monthly_revenue.subscription_revenue + monthly_revenue.extra_credit_revenue > 0

),

user_month_end_pools as (

    -- the purchased pool each user holds at the end of each month with activity
    select user_id, activity_month, purchased_after
    from (
        select
            user_id,
            activity_month,
            purchased_after,
            row_number() over (
                partition by user_id, activity_month
                order by credit_history_id desc
            ) as position_from_end_of_month
        from replayed_rows
    ) as ranked_rows
    where position_from_end_of_month = 1

),

user_pool_at_month_end as (

    -- carried forward to months without activity: the latest month with activity up to then
    select report_months.revenue_month, user_month_end_pools.user_id,
        max(user_month_end_pools.activity_month) as latest_activity_month
    from report_months
    inner join user_month_end_pools
        on user_month_end_pools.activity_month <= report_months.revenue_month
    group by report_months.revenue_month, user_month_end_pools.user_id

),

unused_paid_credits as (

    select
        user_pool_at_month_end.revenue_month,
        cast(sum(user_month_end_pools.purchased_after) as {{ dbt.type_bigint() }}) as unused_paid_credits
    from user_pool_at_month_end
    inner join user_month_end_pools
        on user_pool_at_month_end.user_id = user_month_end_pools.user_id
        and user_pool_at_month_end.latest_activity_month = user_month_end_pools.activity_month
    group by user_pool_at_month_end.revenue_month

),

purchased_credits_to_date as (

    select
        report_months.revenue_month,
        cast(sum(replayed_rows.amount) as {{ dbt.type_bigint() }}) as credits_purchased_to_date
    from report_months
    inner join replayed_rows
        on replayed_rows.activity_month <= report_months.revenue_month
        and replayed_rows.effect = 'purchase'
    group by report_months.revenue_month

),

extra_credit_revenue_to_date as (

    select
        report_months.revenue_month,
        sum(extra_credit_purchases.price) as extra_credit_revenue_to_date
    from report_months
    inner join extra_credit_purchases
        on extra_credit_purchases.revenue_month <= report_months.revenue_month
    group by report_months.revenue_month

),

month_level as (

    select
        monthly_revenue.revenue_month,
        monthly_revenue.subscription_revenue as month_subscription_revenue,
        monthly_revenue.extra_credit_revenue as month_extra_credit_revenue,
        coalesce(monthly_consumption.month_credits_consumed, 0) as month_credits_consumed,
        coalesce(unused_paid_credits.unused_paid_credits, 0) as unused_paid_credits,
        {{ safe_divide(
            'extra_credit_revenue_to_date.extra_credit_revenue_to_date',
            'purchased_credits_to_date.credits_purchased_to_date'
        ) }} as paid_credit_price
    from monthly_revenue
    left join monthly_consumption
        on monthly_revenue.revenue_month = monthly_consumption.revenue_month
    left join unused_paid_credits
        on monthly_revenue.revenue_month = unused_paid_credits.revenue_month
    left join purchased_credits_to_date
        on monthly_revenue.revenue_month = purchased_credits_to_date.revenue_month
    left join extra_credit_revenue_to_date
        on monthly_revenue.revenue_month = extra_credit_revenue_to_date.revenue_month

),

attributed as (

    select
        attribution_rows.revenue_month,
        attribution_rows.service,
        attribution_rows.credits_consumed,
        case
            when month_level.month_credits_consumed = 0 then 1.0
            else {{ safe_divide('attribution_rows.credits_consumed', 'month_level.month_credits_consumed') }}
        end as consumption_share,
        month_level.month_subscription_revenue,
        month_level.month_extra_credit_revenue,
        month_level.month_credits_consumed,
        month_level.unused_paid_credits,
        month_level.paid_credit_price
    from attribution_rows
    inner join month_level
        on attribution_rows.revenue_month = month_level.revenue_month

)

select
    revenue_month,
    service,
    credits_consumed,
    consumption_share,
    month_subscription_revenue * consumption_share as subscription_revenue,
    month_extra_credit_revenue * consumption_share as extra_credit_revenue,
    (month_subscription_revenue + month_extra_credit_revenue) * consumption_share
        as attributed_revenue,
    {{ safe_divide(
        '(month_subscription_revenue + month_extra_credit_revenue) * consumption_share',
        'credits_consumed'
    ) }} as revenue_per_credit,
    month_subscription_revenue,
    month_extra_credit_revenue,
    month_credits_consumed,
    unused_paid_credits,
    unused_paid_credits * paid_credit_price as unused_paid_credits_liability
from attributed
