{#-
    A model's grain: no two rows share the same values of `columns` (dbt_utils'
    unique_combination_of_columns, without the package).
-#}
{% test unique_combination(model, columns) %}

with grain as (
    select
        {{ columns | join(', ') }},
        count(*) as row_count
    from {{ model }}
    group by {{ columns | join(', ') }}
)

select *
from grain
where row_count > 1

{% endtest %}
