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


{#-
    The CTEs (ending in `users_to_rebuild`) that a model kept per user with replace_key_groups
    starts with on an incremental run: the users whose rows may differ from the ones it kept.
    `replayed_relation` is the model's input, one row per ledger row with replay_sequence (the
    reconciliation run that last replayed it); `dated_relation` has those rows' created_at;
    `kept_row_count` counts, from the model's own rows, the ledger rows kept for a user. A user is
    rebuilt when its input rows' count or highest replay_sequence differs from the kept ones (new,
    late, rewritten or deleted rows: the reconciliation replayed it since), when it is new, or
    when one of its rows has no created_at or is dated after the last kept day (the day such a
    row counts on follows the cut-off).
-#}
{% macro users_to_rebuild_ctes(replayed_relation, dated_relation, kept_row_count='count(*)') -%}
kept_last_day as (

    -- no later than the day of the previous run's cut-off
    select max(balance_date) as last_balance_date
    from {{ this }}

),

kept_users as (

    select
        user_id,
        {{ kept_row_count }} as ledger_rows,
        max(replay_sequence) as last_replay_sequence
    from {{ this }}
    group by user_id

),

replayed_users as (

    select
        user_id,
        count(*) as ledger_rows,
        max(replay_sequence) as last_replay_sequence
    from {{ replayed_relation }}
    group by user_id

),

dated_users as (

    select distinct dated_rows.user_id
    from {{ dated_relation }} as dated_rows
    cross join kept_last_day
    where dated_rows.created_at is null
        or cast(dated_rows.created_at as date) > kept_last_day.last_balance_date

),

users_to_rebuild as (

    select replayed_users.user_id
    from replayed_users
    left join kept_users
        on replayed_users.user_id is not distinct from kept_users.user_id
    where kept_users.ledger_rows is null
        or kept_users.ledger_rows <> replayed_users.ledger_rows
        or kept_users.last_replay_sequence <> replayed_users.last_replay_sequence
    union
    select user_id from dated_users

),
{%- endmacro %}
