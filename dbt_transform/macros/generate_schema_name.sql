{#-
    Schemas are named exactly: `credits` and `marts` (docs/warehouse-layout.md), not dbt's default
    `<target schema>_<custom schema>`. On BigQuery the datasets may sit behind one
    environment-specific prefix (contract section 4), read from CREDITS_BIGQUERY_DATASET_PREFIX.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ warehouse_schema_prefix() }}{{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}

{% macro warehouse_schema_prefix() -%}
    {%- if target.type == 'bigquery' -%}{{ env_var('CREDITS_BIGQUERY_DATASET_PREFIX', '') }}{%- endif -%}
{%- endmacro %}
