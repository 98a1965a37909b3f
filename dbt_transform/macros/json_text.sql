{#- A scalar of a JSON text column as text (NULL when absent; invalid JSON is quarantined). -#}
{% macro json_text(column, path) -%}
    {{ return(adapter.dispatch('json_text', 'credits_transform')(column, path)) }}
{%- endmacro %}

{% macro default__json_text(column, path) -%}
    json_extract_string(try_cast({{ column }} as json), '{{ path }}')
{%- endmacro %}

{% macro bigquery__json_text(column, path) -%}
    json_value({{ column }}, '{{ path }}')
{%- endmacro %}
