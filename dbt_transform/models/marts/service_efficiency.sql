with

replayed_rows as (

    select
        credit_history_id,
        user_id,
        event_name,
        effect,
        service,
        balance_date,
        creditable_type,
        creditable_id,
        amount
    from {{ ref('int_credit_replay') }}

),

row_plans as (

    select credit_history_id, price_per_credit from {{ ref('int_ledger_row_plans') }}

),

charges as (

    select
        replayed_rows.credit_history_id,
        replayed_rows.user_id,
        coalesce(replayed_rows.service, 'unknown') as service,
        {{ month_of('replayed_rows.balance_date') }} as usage_month,
        replayed_rows.creditable_type,
        replayed_rows.creditable_id,
        replayed_rows.amount,
        -- the credits at the list price of the plan held when they were charged
        replayed_rows.amount * row_plans.price_per_credit as list_value,
        case when row_plans.price_per_credit is not null then replayed_rows.amount end
            as priced_amount
    from replayed_rows
    left join row_plans
        on replayed_rows.credit_history_id = row_plans.credit_history_id
    where replayed_rows.effect = 'spend'

),

refunds as (

    select credit_history_id, user_id, creditable_type, creditable_id, amount
    from replayed_rows
    where event_name = 'refunded_credits'
        and creditable_type is not null
        and creditable_id is not null

),

refunded_charges as (

    -- a refund reverses the latest earlier charge of the same user on the same creditable
    select
        refunds.credit_history_id as refund_id,
        refunds.amount as refunded_amount,
        max(charges.credit_history_id) as charge_id
    from refunds
    inner join charges
        on refunds.user_id = charges.user_id
        and refunds.creditable_type = charges.creditable_type
        and refunds.creditable_id = charges.creditable_id
        and charges.credit_history_id < refunds.credit_history_id
    group by refunds.credit_history_id, refunds.amount

),

refunds_per_charge as (

    select charge_id, cast(sum(refunded_amount) as {{ dbt.type_bigint() }}) as refunded_amount
    from refunded_charges
    group by charge_id

),

charges_with_refunds as (

    select
        charges.credit_history_id,
        charges.user_id,
        charges.service,
        charges.usage_month,
        charges.creditable_type,
        charges.creditable_id,
        charges.amount,
        charges.list_value,
        charges.priced_amount,
        refunds_per_charge.charge_id is not null as is_refunded,
        coalesce(refunds_per_charge.refunded_amount, 0) as refunded_amount
    from charges
    left join refunds_per_charge
        on charges.credit_history_id = refunds_per_charge.charge_id

),

content_items as (

    -- the content a charge can be for, with the service that generates it and whether it was
    -- completed: a faceless by its render video's status, the others by their own
    select
        'faceless' as creditable_type, facelesses.id as creditable_id, facelesses.user_id,
        'faceless_video' as service,
        coalesce(videos.status = 'completed', false) as is_completed
    from {{ source('raw', 'facelesses') }} as facelesses
    left join {{ source('raw', 'videos') }} as videos
        on facelesses.video_id = videos.id
    union all
    select
        'real-clone', id, user_id, 'real_clone', coalesce(status = 'completed', false)
    from {{ source('raw', 'real_clones') }}
    union all
    select
        'speech', id, user_id, 'voice_synthesis', coalesce(status = 'completed', false)
    from {{ source('raw', 'speeches') }}
    union all
    select
        'video', id, user_id, 'video_render', coalesce(status = 'completed', false)
    from {{ source('raw', 'videos') }}
    where type = 'custom'

),

item_costs as (

    -- every charge on a completed item, any service (a faceless's AI images count toward the
    -- faceless), net of refunds; the item counts in the month of its first charge
    select
        content_items.service,
        content_items.creditable_type,
        content_items.creditable_id,
        min(charges_with_refunds.usage_month) as usage_month,
        count(*) as charges,
        sum(charges_with_refunds.amount) - sum(charges_with_refunds.refunded_amount)
            as net_credits,
        sum(charges_with_refunds.list_value) as list_value
    from content_items
    inner join charges_with_refunds
        on content_items.creditable_type = charges_with_refunds.creditable_type
        and content_items.creditable_id = charges_with_refunds.creditable_id
        and content_items.user_id = charges_with_refunds.user_id
    where content_items.is_completed
    group by content_items.service, content_items.creditable_type, content_items.creditable_id

),

item_costs_per_month as (

    select
        service,
        usage_month,
        count(*) as completed_items,
        {{ safe_divide('sum(net_credits)', 'count(*)') }} as credits_per_completed_item_mean,
        {{ percentile('net_credits', 0.5) }} as credits_per_completed_item_median,
        {{ safe_divide('sum(charges)', 'count(*)') }} as charges_per_completed_item,
        {{ safe_divide('sum(list_value)', 'count(*)') }} as list_value_per_completed_item
    from item_costs
    group by service, usage_month

),

service_months as (

    select
        service,
        usage_month,
        count(*) as charges,
        cast(sum(amount) as {{ dbt.type_bigint() }}) as credits_spent,
        {{ safe_divide('sum(amount)', 'count(*)') }} as credits_per_charge_mean,
        {{ percentile('amount', 0.5) }} as credits_per_charge_median,
        {{ percentile('amount', 0.95) }} as credits_per_charge_p95,
        cast(sum(case when is_refunded then 1 else 0 end) as {{ dbt.type_bigint() }})
            as refunded_charges,
        {{ safe_divide('sum(case when is_refunded then 1 else 0 end)', 'count(*)') }}
            as refund_rate,
        cast(sum(refunded_amount) as {{ dbt.type_bigint() }}) as credits_refunded,
        count(distinct user_id) as users,
        {{ safe_divide('sum(list_value)', 'sum(priced_amount)') }} as list_price_per_credit
    from charges_with_refunds
    group by service, usage_month

)

select
    service_months.service,
    service_months.usage_month,
    service_months.charges,
    service_months.credits_spent,
    service_months.credits_per_charge_mean,
    service_months.credits_per_charge_median,
    service_months.credits_per_charge_p95,
    service_months.refunded_charges,
    service_months.refund_rate,
    service_months.credits_refunded,
    service_months.users,
    service_months.list_price_per_credit,
    case service_months.service
        when 'faceless_video' then 'faceless_video'
        when 'real_clone' then 'real_clone'
        when 'voice_synthesis' then 'speech'
        when 'video_render' then 'custom_video'
    end as content_type,
    coalesce(item_costs_per_month.completed_items, 0) as completed_items,
    item_costs_per_month.credits_per_completed_item_mean,
    item_costs_per_month.credits_per_completed_item_median,
    item_costs_per_month.charges_per_completed_item,
    item_costs_per_month.list_value_per_completed_item
from service_months
left join item_costs_per_month
    on service_months.service = item_costs_per_month.service
    and service_months.usage_month = item_costs_per_month.usage_month
