{#-
    An incremental strategy for models kept per user (`incremental_strategy='replace_key_groups'`,
    `unique_key` naming the group's column): every target row whose key appears among the model's
    new rows is deleted, then the new rows are inserted, in the materialization's one transaction.
    dbt's own delete+insert does the same with `=`, which never matches a NULL key, so the rows of
    the NULL group (ledger rows without a user) would pile up run after run; here keys are compared
    with `is not distinct from`. Groups that vanished from the model's input have no new rows:
    the model deletes those itself (a post-hook, see int_credit_replay).
-#}
{% macro get_incremental_replace_key_groups_sql(arg_dict) -%}
    {{ return(adapter.dispatch('get_incremental_replace_key_groups_sql', 'credits_transform')(arg_dict)) }}
{%- endmacro %}

{% macro default__get_incremental_replace_key_groups_sql(arg_dict) -%}
    {%- set key = arg_dict['unique_key'] -%}
    {%- if not key or key is not string -%}
        {{ exceptions.raise_compiler_error("replace_key_groups needs unique_key: one column") }}
    {%- endif -%}
    {%- set columns = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
    delete from {{ arg_dict['target_relation'] }} as kept_rows
    where exists (
        select 1
        from {{ arg_dict['temp_relation'] }} as rebuilt_rows
        where rebuilt_rows.{{ key }} is not distinct from kept_rows.{{ key }}
    );
    insert into {{ arg_dict['target_relation'] }} ({{ columns }})
    select {{ columns }}
    from {{ arg_dict['temp_relation'] }}
{%- endmacro %}


{#-
    The post-hook of a model kept with replace_key_groups: deletes the groups (users) its input no
    longer has, which no new row names. A no-op when the model was built whole.
-#}
{% macro delete_vanished_key_groups(key, input_relation) -%}
    {%- if is_incremental() -%}
    delete from {{ this }} as kept_rows
    where not exists (
        select 1
        from {{ input_relation }} as input_rows
        where input_rows.{{ key }} is not distinct from kept_rows.{{ key }}
    )
    {%- else -%}
    select 1
    {%- endif -%}
{%- endmacro %}
