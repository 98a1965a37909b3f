{#-
    The models kept per user on DuckDB (int_credit_replay, user_credit_daily): incremental with
    dbt's `append` strategy, a pre-hook that deletes what the new rows replace
    (`delete_replaced_rows`) and a post-hook that deletes the users the input no longer has
    (`delete_vanished_key_groups`). dbt runs both hooks inside the materialization's transaction,
    so a build that fails leaves the previous rows.

    Why not rebuild every user with new rows: on an ordinary day a third of the users have new
    rows, and rebuilding them whole cost as much as building the model from scratch (100,000
    users, bench/end_to_end.py: int_credit_replay 14.8 s against 15.6 s). The reconciliation
    resumes most users: it replays only their rows above its checkpoint, numbered by its new run
    (`replay_sequence`), and keeps their older rows as they were. Such a user is *extended*: the
    replayed ledger appends its new rows, the daily mart rebuilds its days from the first day a
    new row counts on. A user is *rebuilt* whole (deleted here, then built from its first row)
    when its kept rows may no longer hold:
    - its input rows numbered by runs the model already saw differ from the kept ones in count
      or highest number (the reconciliation replayed its whole past again: a row rewritten,
      deleted, quarantined or committed late below the checkpoint; a changed event catalog);
    - (the replayed ledger) a new row has an id at or below its highest kept id;
    - one of its rows numbered by runs the model already saw has no created_at or a day after the
      last kept day (the day such a row counts on follows the cut-off, or its user's first day).
    A new user is built whole; a user with nothing new is left alone.
-#}


{#- Whether a model kept per user resumes from its kept rows: it was built before, by a version
    that numbers its rows (replay_sequence). A table kept without the numbers is rebuilt once. -#}
{% macro kept_per_user_resumes() -%}
    {%- if not is_incremental() -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set columns = adapter.get_columns_in_relation(this) | map(attribute='name') | list -%}
    {{ return('replay_sequence' in columns) }}
{%- endmacro %}


{#-
    The pre-hook of a model kept per user: deletes the users to rebuild and, with
    `replace_days_from_first_new`, the days of an extended user from the first day a new row
    counts on. `input_relation`: the model's input, one row per ledger row with user_id,
    replay_sequence, and balance_date (to replace days) or `row_id` (to append rows);
    `dated_relation`: rows with user_id, replay_sequence and created_at; `kept_row_count`: counts,
    from the model's own rows, the ledger rows kept for a user. A no-op on a build from scratch;
    deletes every row of a table kept without replay_sequence.
-#}
{% macro delete_replaced_rows(
    input_relation, dated_relation, kept_row_count='count(*)', row_id='credit_history_id',
    replace_days_from_first_new=false
) -%}
{%- if not is_incremental() -%}
    select 1
{%- elif not kept_per_user_resumes() -%}
    delete from {{ this }}
{%- else -%}
    delete from {{ this }} as kept_rows
    using (

        with

        kept_last_day as (

            -- no later than the day of the previous run's cut-off
            select max(balance_date) as last_balance_date
            from {{ this }}

        ),

        kept_sequence as (

            -- the newest reconciliation run whose rows the model holds
            select max(replay_sequence) as last_replay_sequence
            from {{ this }}

        ),

        kept_users as (

            select
                user_id,
                {{ kept_row_count }} as ledger_rows,
                max(replay_sequence) as last_replay_sequence
                {%- if not replace_days_from_first_new %},
                max({{ row_id }}) as last_row_id
                {%- endif %}
            from {{ this }}
            group by user_id

        ),

        input_users as (

            -- each user's input rows, split by whether a run the model already saw numbered them
            select
                input_rows.user_id,
                count(case
                    when input_rows.replay_sequence <= kept_sequence.last_replay_sequence then 1
                end) as seen_rows,
                max(case
                    when input_rows.replay_sequence <= kept_sequence.last_replay_sequence
                        then input_rows.replay_sequence
                end) as seen_last_replay_sequence,
                min(case
                    when input_rows.replay_sequence > kept_sequence.last_replay_sequence
                        {%- if replace_days_from_first_new %}
                        then input_rows.balance_date
                        {%- else %}
                        then input_rows.{{ row_id }}
                        {%- endif %}
                end) as first_new_{{ 'balance_date' if replace_days_from_first_new else 'row_id' }}
            from {{ input_relation }} as input_rows
            cross join kept_sequence
            group by input_rows.user_id

        ),

        dated_users as (

            -- rows numbered by runs the model saw whose day may have moved since: a row dated
            -- after the last kept day counted on the cut-off's day, a row without created_at on
            -- a day its user's other rows or the cut-off decide (a new row's day is new anyway)
            select distinct dated_rows.user_id, true as is_dated
            from {{ dated_relation }} as dated_rows
            cross join kept_last_day
            cross join kept_sequence
            where dated_rows.replay_sequence <= kept_sequence.last_replay_sequence
                and (
                    dated_rows.created_at is null
                    or cast(dated_rows.created_at as date) > kept_last_day.last_balance_date
                )

        ),

        judged_users as (

            select
                kept_users.user_id,
                coalesce(dated_users.is_dated, false)
                    or input_users.seen_rows <> kept_users.ledger_rows
                    or input_users.seen_last_replay_sequence
                        is distinct from kept_users.last_replay_sequence
                    {%- if not replace_days_from_first_new %}
                    or input_users.first_new_row_id <= kept_users.last_row_id
                    {%- endif %}
                    as is_rebuilt,
                {%- if replace_days_from_first_new %}
                input_users.first_new_balance_date
                {%- else %}
                cast(null as date)
                {%- endif %} as first_new_balance_date
            from kept_users
            -- a user the input no longer has is the post-hook's
            inner join input_users
                on kept_users.user_id is not distinct from input_users.user_id
            left join dated_users
                on kept_users.user_id is not distinct from dated_users.user_id

        )

        select
            user_id,
            case when not is_rebuilt then first_new_balance_date end as replace_from_date
        from judged_users
        where is_rebuilt or first_new_balance_date is not null

    ) as replaced_users
    where replaced_users.user_id is not distinct from kept_rows.user_id
        and (
            replaced_users.replace_from_date is null
            or kept_rows.balance_date >= replaced_users.replace_from_date
        )
{%- endif -%}
{%- endmacro %}


{#-
    The post-hook of a model kept per user: deletes the groups (users) its input no longer has,
    which no new row names. A no-op when the model was built whole.
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
