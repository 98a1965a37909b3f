{#-
    A model's grain: no two rows share the same values of `columns` (dbt_utils'
    unique_combination_of_columns, without the package). Each duplicated combination once, with
    its row_count; the query is per engine (macros/uniqueness.sql).
-#}
{% test unique_combination(model, columns) %}
{{ unique_combination_rows(model, columns) }}
{% endtest %}
