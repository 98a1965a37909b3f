{#-
    Fraud and usage-pattern signals: one row per (user, signal) with evidence in the signal's
    window, `flagged` when the evidence crosses the signal's threshold. Every window ends at the
    extraction cut-off. `score` is how far the evidence is past the threshold (1 = at it; a signal
    with two conditions that must both hold takes the smaller ratio, one with alternative
    conditions the larger), so flagged = score >= 1 for every signal. What each signal catches and
    what legitimately looks like it: docs/analytics.md.
-#}
{#- the ledger rows each signal lists as evidence, at most (`ledger_rows` counts them all) -#}
{%- set row_id_limit = var('usage_risk_listed_rows', 50) -%}
{#- spend_velocity_spike: the last week against the user's own trailing weeks -#}
{%- set spike_baseline_weeks = 8 -%}
{%- set spike_min_history_weeks = 4 -%}
{%- set spike_min_robust_z = 6 -%}
{%- set spike_min_excess_credits = 1000 -%}
{%- set spike_min_ratio_to_busiest_week = 3 -%}
{#- refund_ratio, purchase_then_drain, admin grants, overdrafts, shared content: 90 days -#}
{%- set window_days = 90 -%}
{%- set refund_min_ratio = 0.35 -%}
{%- set refund_min_refunds = 6 -%}
{%- set refund_min_credits = 200 -%}
{%- set drain_min_pack_credits = 500 -%}
{%- set drain_minutes = 30 -%}
{%- set drain_min_share = 0.8 -%}
{%- set drain_min_purchases = 2 -%}
{%- set grant_min_count = 3 -%}
{%- set grant_outsized_floor = 1000 -%}
{%- set grant_outsized_multiple = 10 -%}
{%- set overdraft_min_count = 2 -%}
{%- set shared_min_accounts = 4 -%}
{%- set week_seconds = 7 * 86400 -%}

with

extraction_cutoff as (

    select
        cutoff_at,
        {{ shift_timestamp('day', -window_days, 'cutoff_at') }} as window_start
    from {{ source('raw', 'extraction_cutoff') }}

),

ledger_rows as (

    -- rows written up to the cut-off (a NULL created_at has no place in a window)
    select
        replayed_rows.credit_history_id,
        replayed_rows.user_id,
        replayed_rows.event_name,
        replayed_rows.effect,
        replayed_rows.creditable_type,
        replayed_rows.creditable_id,
        replayed_rows.amount,
        replayed_rows.written_off_credits,
        replayed_rows.created_at,
        {{ dbt.datediff('replayed_rows.created_at', 'extraction_cutoff.cutoff_at', 'second') }}
            as seconds_before_cutoff
    from {{ ref('int_credit_replay') }} as replayed_rows
    cross join extraction_cutoff
    where replayed_rows.created_at is not null
        and replayed_rows.created_at <= extraction_cutoff.cutoff_at

),

window_rows as (

    select
        ledger_rows.credit_history_id,
        ledger_rows.user_id,
        ledger_rows.event_name,
        ledger_rows.effect,
        ledger_rows.creditable_type,
        ledger_rows.creditable_id,
        ledger_rows.amount,
        ledger_rows.written_off_credits,
        ledger_rows.created_at,
        ledger_rows.seconds_before_cutoff
    from ledger_rows
    cross join extraction_cutoff
    where ledger_rows.created_at > extraction_cutoff.window_start

),

-- spend_velocity_spike -------------------------------------------------------------------------

weekly_spend as (

    -- week 0 is the 7 days up to the cut-off, week 1 the 7 days before, ...
    select
        user_id,
        cast(floor(seconds_before_cutoff / {{ week_seconds }}) as {{ dbt.type_bigint() }})
            as weeks_before_cutoff,
        sum(amount) as credits_spent,
        count(*) as spend_rows
    from ledger_rows
    where effect = 'spend'
        and seconds_before_cutoff < {{ week_seconds * (spike_baseline_weeks + 1) }}
    group by 1, 2

),

user_first_rows as (

    select
        user_id,
        cast(floor(max(seconds_before_cutoff) / {{ week_seconds }}) as {{ dbt.type_bigint() }})
            as weeks_of_history
    from ledger_rows
    group by user_id

),

spike_candidates as (

    select weekly_spend.user_id, weekly_spend.credits_spent as observed_credits,
        weekly_spend.spend_rows, user_first_rows.weeks_of_history
    from weekly_spend
    inner join user_first_rows
        on weekly_spend.user_id = user_first_rows.user_id
    where weekly_spend.weeks_before_cutoff = 0

),

baseline_weeks as (

    -- every trailing week the user already had a ledger, with 0 for weeks without spending
    select
        spike_candidates.user_id,
        week_numbers.generated_number as weeks_before_cutoff,
        coalesce(weekly_spend.credits_spent, 0) as credits_spent
    from spike_candidates
    cross join ({{ dbt.generate_series(spike_baseline_weeks) }}) as week_numbers
    left join weekly_spend
        on spike_candidates.user_id = weekly_spend.user_id
        and weekly_spend.weeks_before_cutoff = week_numbers.generated_number
    where week_numbers.generated_number <= spike_candidates.weeks_of_history

),

baseline_medians as (

    select
        user_id,
        count(*) as baseline_weeks,
        {{ percentile('credits_spent', 0.5) }} as median_weekly_credits,
        max(credits_spent) as busiest_weekly_credits
    from baseline_weeks
    group by user_id

),

baseline_deviations as (

    select
        baseline_weeks.user_id,
        {{ percentile(
            'abs(baseline_weeks.credits_spent - baseline_medians.median_weekly_credits)', 0.5) }}
            as median_absolute_deviation
    from baseline_weeks
    inner join baseline_medians
        on baseline_weeks.user_id = baseline_medians.user_id
    group by baseline_weeks.user_id

),

spike_rows as (

    select
        user_id,
        {{ dbt.listagg(
            'cast(credit_history_id as ' ~ dbt.type_string() ~ ')', "','",
            'order by credit_history_id', row_id_limit) }} as ledger_row_ids
    from ledger_rows
    where effect = 'spend' and seconds_before_cutoff < {{ week_seconds }}
    group by user_id

),

spike_evidence as (

    select
        spike_candidates.user_id,
        cast(spike_candidates.observed_credits as {{ type_double() }}) as observed_credits,
        cast(baseline_medians.median_weekly_credits as {{ type_double() }})
            as median_weekly_credits,
        cast(baseline_deviations.median_absolute_deviation as {{ type_double() }})
            as median_absolute_deviation,
        cast(baseline_medians.busiest_weekly_credits as {{ type_double() }})
            as busiest_weekly_credits,
        spike_candidates.spend_rows,
        spike_rows.ledger_row_ids
    from spike_candidates
    inner join baseline_medians
        on spike_candidates.user_id = baseline_medians.user_id
    inner join baseline_deviations
        on spike_candidates.user_id = baseline_deviations.user_id
    inner join spike_rows
        on spike_candidates.user_id = spike_rows.user_id
    where baseline_medians.baseline_weeks >= {{ spike_min_history_weeks }}

),

spike_signals as (

    select
        user_id,
        'spend_velocity_spike' as signal,
        {{ shift_timestamp('day', -7, 'extraction_cutoff.cutoff_at') }} as window_start,
        -- robust z (MAD scaled to a standard deviation, at least 1 credit), the excess over the
        -- median and the ratio to the busiest baseline week must all pass their thresholds
        least(
            (observed_credits - median_weekly_credits)
                / greatest(1.4826 * median_absolute_deviation, 1.0) / {{ spike_min_robust_z }},
            (observed_credits - median_weekly_credits) / {{ spike_min_excess_credits }},
            observed_credits / greatest(busiest_weekly_credits, 1.0)
                / {{ spike_min_ratio_to_busiest_week }}
        ) as score,
        observed_credits as observed_value,
        median_weekly_credits as baseline_value,
        'credits spent in the last 7 days vs the median week of the '
            || cast(cast(median_absolute_deviation as {{ dbt.type_bigint() }})
                as {{ dbt.type_string() }})
            || '-credit MAD, busiest '
            || cast(cast(busiest_weekly_credits as {{ dbt.type_bigint() }})
                as {{ dbt.type_string() }})
            || ', over up to {{ spike_baseline_weeks }} trailing weeks' as evidence,
        ledger_row_ids,
        spend_rows as ledger_rows,
        cast(observed_credits as {{ dbt.type_bigint() }}) as credits_involved
    from spike_evidence
    cross join extraction_cutoff

),

-- refund_ratio ---------------------------------------------------------------------------------

refunds_and_charges as (

    select
        user_id,
        sum(case when effect = 'spend' then amount else 0 end) as credits_charged,
        sum(case when event_name = 'refunded_credits' then amount else 0 end) as credits_refunded,
        sum(case when event_name = 'refunded_credits' then 1 else 0 end) as refunds
    from window_rows
    group by user_id

),

refund_rows as (

    -- the user's first refund rows: aggregated over refund rows only (an ordered list over every
    -- row of the window held the 90 days of every user in memory: out of 1 GiB at 100,000 users;
    -- and DuckDB kept the other rows' NULLs in the list before its limit, BigQuery did not)
    select
        user_id,
        {{ dbt.listagg(
            'cast(credit_history_id as ' ~ dbt.type_string() ~ ')', "','",
            'order by credit_history_id', row_id_limit) }} as ledger_row_ids
    from window_rows
    where event_name = 'refunded_credits'
    group by user_id

),

platform_refund_ratio as (

    select {{ safe_divide('sum(credits_refunded)', 'sum(credits_charged)') }} as refund_ratio
    from refunds_and_charges

),

refund_signals as (

    select
        refunds_and_charges.user_id,
        'refund_ratio' as signal,
        extraction_cutoff.window_start,
        least(
            coalesce({{ safe_divide('refunds_and_charges.credits_refunded',
                                    'refunds_and_charges.credits_charged') }}, 0)
                / {{ refund_min_ratio }},
            cast(refunds_and_charges.refunds as {{ type_double() }}) / {{ refund_min_refunds }},
            cast(refunds_and_charges.credits_refunded as {{ type_double() }})
                / {{ refund_min_credits }}
        ) as score,
        {{ safe_divide('refunds_and_charges.credits_refunded',
                       'refunds_and_charges.credits_charged') }} as observed_value,
        platform_refund_ratio.refund_ratio as baseline_value,
        'credits refunded / credits charged in {{ window_days }} days ('
            || cast(refunds_and_charges.refunds as {{ dbt.type_string() }}) || ' refunds of '
            || cast(refunds_and_charges.credits_refunded as {{ dbt.type_string() }}) || ' / '
            || cast(refunds_and_charges.credits_charged as {{ dbt.type_string() }})
            || ' credits) vs the ratio of all users' as evidence,
        refund_rows.ledger_row_ids,
        refunds_and_charges.refunds as ledger_rows,
        cast(refunds_and_charges.credits_refunded as {{ dbt.type_bigint() }}) as credits_involved
    from refunds_and_charges
    left join refund_rows
        on refunds_and_charges.user_id = refund_rows.user_id
    cross join extraction_cutoff
    cross join platform_refund_ratio
    where refunds_and_charges.refunds > 0

),

-- purchase_then_drain --------------------------------------------------------------------------

large_purchases as (

    select credit_history_id, user_id, amount as pack_credits, created_at
    from window_rows
    where effect = 'purchase' and amount >= {{ drain_min_pack_credits }}

),

purchase_drains as (

    -- what the user spent from the purchase until {{ drain_minutes }} minutes after it
    select
        large_purchases.credit_history_id,
        large_purchases.user_id,
        large_purchases.pack_credits,
        coalesce(sum(spends.amount), 0) as credits_spent_after,
        count(spends.credit_history_id) as spend_rows
    from large_purchases
    left join ledger_rows as spends
        on large_purchases.user_id = spends.user_id
        and spends.effect = 'spend'
        and spends.credit_history_id > large_purchases.credit_history_id
        and spends.created_at >= large_purchases.created_at
        and spends.created_at
            <= {{ shift_timestamp('minute', drain_minutes, 'large_purchases.created_at') }}
    group by large_purchases.credit_history_id, large_purchases.user_id,
        large_purchases.pack_credits

),

judged_purchases as (

    -- each large purchase and whether it was drained: the one place the share is compared
    select
        credit_history_id,
        user_id,
        pack_credits,
        spend_rows,
        credits_spent_after >= {{ drain_min_share }} * pack_credits as is_drained
    from purchase_drains

),

drained_purchases as (

    select
        user_id,
        sum(case when is_drained then 1 else 0 end) as drained_purchases,
        count(*) as large_purchases,
        sum(case when is_drained then pack_credits else 0 end) as drained_credits,
        sum(case when is_drained then spend_rows + 1 else 0 end) as drain_rows
    from judged_purchases
    group by user_id

),

drained_pack_rows as (

    -- the drained packs' ids, aggregated over drained packs only: a listing over every pack, NULL
    -- for the others, kept those NULLs among its first ids (DuckDB, the BigQuery emulator)
    select
        user_id,
        {{ dbt.listagg(
            'cast(credit_history_id as ' ~ dbt.type_string() ~ ')', "','",
            'order by credit_history_id', row_id_limit) }} as ledger_row_ids
    from judged_purchases
    where is_drained
    group by user_id

),

drain_signals as (

    select
        drained_purchases.user_id,
        'purchase_then_drain' as signal,
        extraction_cutoff.window_start,
        cast(drained_purchases.drained_purchases as {{ type_double() }})
            / {{ drain_min_purchases }} as score,
        cast(drained_purchases.drained_purchases as {{ type_double() }}) as observed_value,
        cast(drained_purchases.large_purchases as {{ type_double() }}) as baseline_value,
        'packs of {{ drain_min_pack_credits }}+ credits {{ (drain_min_share * 100) | int }}% spent'
            || ' within {{ drain_minutes }} minutes of the purchase, of '
            || cast(drained_purchases.large_purchases as {{ dbt.type_string() }})
            || ' such packs bought in {{ window_days }} days (purchase rows listed)' as evidence,
        drained_pack_rows.ledger_row_ids,
        drained_purchases.drain_rows as ledger_rows,
        cast(drained_purchases.drained_credits as {{ dbt.type_bigint() }}) as credits_involved
    from drained_purchases
    left join drained_pack_rows
        on drained_purchases.user_id = drained_pack_rows.user_id
    cross join extraction_cutoff
    where drained_purchases.drained_purchases > 0

),

-- admin_grant_out_of_pattern -------------------------------------------------------------------

admin_grants as (

    select credit_history_id, user_id, amount, created_at
    from ledger_rows
    where event_name = 'admin_credit_added'

),

usual_grant as (

    -- the platform's usual grant, over the whole history
    select
        {{ percentile('amount', 0.5) }} as median_grant_credits
    from admin_grants

),

grants_per_user as (

    select
        admin_grants.user_id,
        count(*) as grants,
        max(admin_grants.amount) as largest_grant,
        sum(admin_grants.amount) as credits_granted,
        {{ dbt.listagg(
            'cast(admin_grants.credit_history_id as ' ~ dbt.type_string() ~ ')', "','",
            'order by admin_grants.credit_history_id', row_id_limit) }} as ledger_row_ids
    from admin_grants
    cross join extraction_cutoff
    where admin_grants.created_at > extraction_cutoff.window_start
    group by admin_grants.user_id

),

grant_signals as (

    select
        grants_per_user.user_id,
        'admin_grant_out_of_pattern' as signal,
        extraction_cutoff.window_start,
        greatest(
            cast(grants_per_user.grants as {{ type_double() }}) / {{ grant_min_count }},
            cast(grants_per_user.largest_grant as {{ type_double() }}) / greatest(
                {{ grant_outsized_floor }},
                {{ grant_outsized_multiple }} * coalesce(usual_grant.median_grant_credits, 0)
            )
        ) as score,
        cast(grants_per_user.largest_grant as {{ type_double() }}) as observed_value,
        cast(usual_grant.median_grant_credits as {{ type_double() }}) as baseline_value,
        'largest of ' || cast(grants_per_user.grants as {{ dbt.type_string() }})
            || ' admin grants in {{ window_days }} days vs the median grant of all users'
            as evidence,
        grants_per_user.ledger_row_ids,
        grants_per_user.grants as ledger_rows,
        cast(grants_per_user.credits_granted as {{ dbt.type_bigint() }}) as credits_involved
    from grants_per_user
    cross join extraction_cutoff
    cross join usual_grant

),

-- repeated_overdraft_writeoffs -----------------------------------------------------------------

overdrafts_per_user as (

    select
        user_id,
        count(*) as overdrafts,
        sum(written_off_credits) as credits_written_off,
        {{ dbt.listagg(
            'cast(credit_history_id as ' ~ dbt.type_string() ~ ')', "','",
            'order by credit_history_id', row_id_limit) }} as ledger_row_ids
    from window_rows
    where written_off_credits > 0
    group by user_id

),

overdraft_signals as (

    select
        overdrafts_per_user.user_id,
        'repeated_overdraft_writeoffs' as signal,
        extraction_cutoff.window_start,
        cast(overdrafts_per_user.overdrafts as {{ type_double() }}) / {{ overdraft_min_count }}
            as score,
        cast(overdrafts_per_user.overdrafts as {{ type_double() }}) as observed_value,
        cast(null as {{ type_double() }}) as baseline_value,
        'overdraft write-offs (spends past both pools) in {{ window_days }} days' as evidence,
        overdrafts_per_user.ledger_row_ids,
        overdrafts_per_user.overdrafts as ledger_rows,
        cast(overdrafts_per_user.credits_written_off as {{ dbt.type_bigint() }}) as credits_involved
    from overdrafts_per_user
    cross join extraction_cutoff

),

-- shared_content_pattern -----------------------------------------------------------------------

titled_videos as (

    select videos.id as video_id, videos.user_id, lower(trim(videos.title)) as content_pattern
    from {{ source('raw', 'videos') }} as videos
    cross join extraction_cutoff
    where videos.title is not null
        and trim(videos.title) <> ''
        and videos.created_at > extraction_cutoff.window_start
        and videos.created_at <= extraction_cutoff.cutoff_at

),

shared_patterns as (

    select content_pattern, count(distinct user_id) as accounts
    from titled_videos
    group by content_pattern
    having count(distinct user_id) >= 2

),

shared_video_charges as (

    select
        titled_videos.user_id,
        shared_patterns.content_pattern,
        shared_patterns.accounts,
        charges.credit_history_id,
        charges.amount
    from titled_videos
    inner join shared_patterns
        on titled_videos.content_pattern = shared_patterns.content_pattern
    left join window_rows as charges
        on charges.effect = 'spend'
        and charges.creditable_type = 'video'
        and charges.creditable_id = titled_videos.video_id
        and charges.user_id = titled_videos.user_id

),

shared_per_user as (

    select
        user_id,
        max(accounts) as accounts,
        count(credit_history_id) as charges,
        coalesce(sum(amount), 0) as credits_charged,
        {{ dbt.listagg(
            'cast(credit_history_id as ' ~ dbt.type_string() ~ ')', "','",
            'order by credit_history_id', row_id_limit) }} as ledger_row_ids
    from shared_video_charges
    group by user_id

),

shared_content_signals as (

    select
        shared_per_user.user_id,
        'shared_content_pattern' as signal,
        extraction_cutoff.window_start,
        cast(shared_per_user.accounts as {{ type_double() }}) / {{ shared_min_accounts }} as score,
        cast(shared_per_user.accounts as {{ type_double() }}) as observed_value,
        cast(null as {{ type_double() }}) as baseline_value,
        'accounts that created a video with the same title in {{ window_days }} days (charges'
            || ' of the user for those videos listed)' as evidence,
        shared_per_user.ledger_row_ids,
        shared_per_user.charges as ledger_rows,
        cast(shared_per_user.credits_charged as {{ dbt.type_bigint() }}) as credits_involved
    from shared_per_user
    cross join extraction_cutoff

),

all_signals as (

    {% for relation in ['spike_signals', 'refund_signals', 'drain_signals', 'grant_signals',
                        'overdraft_signals', 'shared_content_signals'] %}
    select
        user_id, signal, window_start, score, observed_value, baseline_value, evidence,
        ledger_row_ids, ledger_rows, credits_involved
    from {{ relation }}
    {% if not loop.last %}union all{% endif %}
    {% endfor %}

)

select
    all_signals.user_id,
    all_signals.signal,
    all_signals.window_start,
    extraction_cutoff.cutoff_at as window_end,
    all_signals.score >= 1 as flagged,
    cast(all_signals.score as {{ type_double() }}) as score,
    cast(all_signals.observed_value as {{ type_double() }}) as observed_value,
    cast(all_signals.baseline_value as {{ type_double() }}) as baseline_value,
    all_signals.evidence,
    all_signals.ledger_row_ids,
    cast(all_signals.ledger_rows as {{ dbt.type_bigint() }}) as ledger_rows,
    all_signals.credits_involved,
    extraction_cutoff.cutoff_at as measured_at
from all_signals
cross join extraction_cutoff
