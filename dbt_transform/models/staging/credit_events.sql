with

source_events as (

    select id, name, type, calculation_type, value, min_amount, created_at, updated_at
    from {{ source('raw', 'credit_events') }}

),

event_catalog as (

    select name, effect, service from {{ ref('event_catalog') }}

),

events_with_catalog as (

    select
        source_events.id as credit_event_id,
        source_events.name,
        source_events.type as event_type,
        source_events.calculation_type,
        cast(source_events.value as {{ type_double() }}) as value,
        cast(source_events.min_amount as {{ type_double() }}) as min_amount,
        case
            when event_catalog.effect is not null then event_catalog.effect
            when source_events.type = 1 then 'add'
            when source_events.type = 2 then 'spend'
        end as effect,
        event_catalog.service,
        source_events.created_at,
        source_events.updated_at
    from source_events
    left join event_catalog
        on source_events.name = event_catalog.name

)

select
    credit_event_id,
    name,
    event_type,
    calculation_type,
    value,
    min_amount,
    effect,
    service,
    case
        when effect = 'spend' then 'usage'
        when effect in ('reset', 'add', 'purchase') then 'bonus'
    end as classification,
    created_at,
    updated_at
from events_with_catalog
