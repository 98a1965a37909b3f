with

extraction_cutoff as (

    select cutoff_at, {{ month_of('cutoff_at') }} as cutoff_month
    from {{ source('raw', 'extraction_cutoff') }}

),

users as (

    select
        users.id as user_id,
        {{ month_of('users.created_at') }} as signup_month
    from {{ source('raw', 'users') }} as users
    cross join extraction_cutoff
    where users.created_at is not null
        and users.created_at <= extraction_cutoff.cutoff_at

),

cohort_sizes as (

    select signup_month, count(*) as cohort_users
    from users
    group by signup_month

),

cohort_ages as (

    -- every month from signup to the cut-off's month, whether anyone consumed or not
    select
        cohort_sizes.signup_month,
        cohort_sizes.cohort_users,
        -- dbt.generate_series builds its numbers with power(): FLOAT64 on BigQuery
        cast(month_offsets.generated_number as {{ dbt.type_bigint() }}) - 1 as months_since_signup
    from cohort_sizes
    cross join ({{ dbt.generate_series(600) }}) as month_offsets
    cross join extraction_cutoff
    where month_offsets.generated_number - 1
        <= {{ dbt.datediff('cohort_sizes.signup_month', 'extraction_cutoff.cutoff_month', 'month') }}

),

user_month_spend as (

    select
        users.signup_month,
        users.user_id,
        {{ dbt.datediff('users.signup_month', month_of('replayed_rows.balance_date'), 'month') }}
            as months_since_signup,
        cast(sum(replayed_rows.amount) as {{ dbt.type_bigint() }}) as credits_spent
    from {{ ref('int_credit_replay') }} as replayed_rows
    inner join users
        on replayed_rows.user_id = users.user_id
    where replayed_rows.effect = 'spend'
    group by
        users.signup_month,
        users.user_id,
        {{ dbt.datediff('users.signup_month', month_of('replayed_rows.balance_date'), 'month') }}

),

cohort_spend as (

    select
        signup_month,
        months_since_signup,
        count(*) as consuming_users,
        cast(sum(credits_spent) as {{ dbt.type_bigint() }}) as credits_spent,
        {{ percentile('credits_spent', 0.5) }} as median_credits_spent
    from user_month_spend
    group by signup_month, months_since_signup

)

select
    cohort_ages.signup_month,
    cohort_ages.months_since_signup,
    cohort_ages.cohort_users,
    coalesce(cohort_spend.consuming_users, 0) as consuming_users,
    {{ safe_divide('coalesce(cohort_spend.consuming_users, 0)', 'cohort_ages.cohort_users') }}
        as consuming_share,
    coalesce(cohort_spend.credits_spent, 0) as credits_spent,
    cohort_spend.median_credits_spent
from cohort_ages
left join cohort_spend
    on cohort_ages.signup_month = cohort_spend.signup_month
    and cohort_ages.months_since_signup = cohort_spend.months_since_signup
