{#-
    Price rows of plans with their tier (the product's name) and a monthly price. A table, not an
    ephemeral CTE: the marts that read it get their column lineage through it (an ephemeral model
    has no relation to resolve columns against), and unit tests can give it as an input.
-#}
with

plans as (

    select id, parent_id, plan_id, name, type, price, currency
    from {{ source('raw', 'plans') }}

),

products as (

    select id, name from plans where type = 'product'

)

select
    prices.id as plan_id,
    prices.plan_id as stripe_price_id,
    coalesce(products.name, prices.name) as plan_tier,
    prices.type as billing_interval,
    prices.currency,
    cast(prices.price as {{ type_double() }}) / 100 as price,
    case
        when prices.type = 'month' then cast(prices.price as {{ type_double() }}) / 100
        when prices.type = 'year' then cast(prices.price as {{ type_double() }}) / 100 / 12
    end as monthly_price
from plans as prices
left join products
    on prices.parent_id = products.id
where coalesce(prices.type, '') <> 'product'
