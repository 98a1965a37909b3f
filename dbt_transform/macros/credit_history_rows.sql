{#-
    The seed's `credit_histories` rows (the staging model of the same name is exactly this): every
    closed partition before the cut-off's closed day, and the open snapshot (the open day, late and
    NULL-dated rows), whose copy of a row wins.
-#}
{% macro credit_history_rows() -%}
{%- set ledger_columns = [
    'id', 'user_id', 'credit_events_id', 'creditable_type', 'creditable_id', 'description',
    'label', 'calculative_index', 'event_value', 'amount', 'previous_amount', 'event_type',
    'meta', 'created_at', 'updated_at',
] -%}
with

extraction_cutoff as (

    select ledger_closed_before from {{ source('raw', 'extraction_cutoff') }}

),

open_rows as (

    select {{ ledger_columns | join(', ') }}
    from {{ source('raw', 'credit_histories__open') }}

),

closed_rows as (

    select
        {%- for column in ledger_columns %}
        closed.{{ column }}{{ ',' if not loop.last }}
        {%- endfor %}
    from {{ source('raw', 'credit_histories') }} as closed
    cross join extraction_cutoff
    where closed.created_at < extraction_cutoff.ledger_closed_before
        and not exists (
            -- the source itself, not the open_rows CTE: DuckDB materializes a CTE read twice,
            -- with every column, which kept a reader of one column from pruning the rest
            select 1
            from {{ source('raw', 'credit_histories__open') }} as open_copy
            where open_copy.id = closed.id
        )

),

ledger_rows as (

    select {{ ledger_columns | join(', ') }} from closed_rows
    union all
    select {{ ledger_columns | join(', ') }} from open_rows

),

source_events as (

    select id, name from {{ source('raw', 'credit_events') }}

),

event_catalog as (

    select name, effect, service from {{ ref('event_catalog') }}

),

ledger_with_events as (

    select
        {%- for column in ledger_columns %}
        ledger_rows.{{ column }},
        {%- endfor %}
        source_events.name as event_name,
        event_catalog.effect as catalog_effect,
        event_catalog.service as catalog_service
    from ledger_rows
    left join source_events
        on ledger_rows.credit_events_id = source_events.id
    left join event_catalog
        on source_events.name = event_catalog.name

),

ledger_with_effects as (

    select
        {%- for column in ledger_columns %}
        {{ column }},
        {%- endfor %}
        event_name,
        catalog_service,
        case
            when catalog_effect is not null then catalog_effect
            when event_type = 1 then 'add'
            when event_type = 2 then 'spend'
        end as effect
    from ledger_with_events

)

select
    id as credit_history_id,
    user_id,
    credit_events_id as credit_event_id,
    event_name,
    creditable_type,
    creditable_id,
    description,
    label,
    calculative_index,
    event_value,
    case
        when event_type = 1 then cast(amount as {{ type_double() }})
        when event_type = 2 then -cast(amount as {{ type_double() }})
    end as amount,
    cast(amount as {{ dbt.type_bigint() }}) as unsigned_amount,
    cast(previous_amount as {{ type_double() }}) as previous_amount,
    event_type,
    case
        when event_type = 1 then 'credit'
        when event_type = 2 then 'debit'
    end as direction,
    effect,
    catalog_service as service,
    case when effect = 'purchase' then 'purchased' else 'subscription' end as pool,
    meta as meta_data,
    created_at,
    updated_at
from ledger_with_effects
{%- endmacro %}
