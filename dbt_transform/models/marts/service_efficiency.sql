with

replayed_rows as (

    select * from {{ ref('int_credit_replay') }}

),

charges as (

    select
        credit_history_id,
        user_id,
        coalesce(service, 'unknown') as service,
        {{ month_of('balance_date') }} as usage_month,
        creditable_type,
        creditable_id,
        amount
    from replayed_rows
    where effect = 'spend'

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
        charges.*,
        refunds_per_charge.charge_id is not null as is_refunded,
        coalesce(refunds_per_charge.refunded_amount, 0) as refunded_amount
    from charges
    left join refunds_per_charge
        on charges.credit_history_id = refunds_per_charge.charge_id

)

select
    service,
    usage_month,
    count(*) as generations,
    cast(sum(amount) as {{ dbt.type_bigint() }}) as credits_spent,
    {{ safe_divide('sum(amount)', 'count(*)') }} as credits_per_generation_mean,
    {{ percentile('amount', 0.5) }} as credits_per_generation_median,
    {{ percentile('amount', 0.95) }} as credits_per_generation_p95,
    cast(sum(case when is_refunded then 1 else 0 end) as {{ dbt.type_bigint() }}) as refunded_generations,
    {{ safe_divide('sum(case when is_refunded then 1 else 0 end)', 'count(*)') }} as refund_rate,
    cast(sum(refunded_amount) as {{ dbt.type_bigint() }}) as credits_refunded,
    count(distinct user_id) as users
from charges_with_refunds
group by service, usage_month
