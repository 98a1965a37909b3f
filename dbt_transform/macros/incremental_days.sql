{#-
    The pre-hook of marts.user_credit_daily on DuckDB (an incremental run only): delete the stored
    days the run recomputes, every day of a touched user from the user's first touched day, in the
    same transaction as the append of the recomputed rows. BigQuery replaces day partitions
    instead (see the model).
-#}
{% macro delete_touched_user_days() -%}
    {%- if is_incremental() -%}
        delete from {{ this }} as stored_days
        using (
            select
                user_id,
                min(
                    case when replaced_balance_date < balance_date then replaced_balance_date else balance_date end
                ) as first_touched_day
            from {{ ref('int_credit_replay_delta') }}
            group by user_id
        ) as touched_users
        where stored_days.user_id = touched_users.user_id
            and stored_days.balance_date >= touched_users.first_touched_day
    {%- endif -%}
{%- endmacro %}
