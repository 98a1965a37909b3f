{#-
    The history of what the application stores per user: both credit pools and the plan, as each
    run's consistent cut read them (raw.users is replaced whole by every extraction, so without
    this it only ever holds the latest values). Never name or e-mail: raw.users has neither.

    Check strategy (configured in _snapshots.yml): raw.users.updated_at cannot date a change (the
    application may move a balance without touching it, and it can be NULL), so a version is a
    change of any checked column seen by a run, dated by that run's extraction cut-off
    (`observed_at`, the snapshot's updated_at): dbt_valid_from is the cut-off of the first run that
    read the values, dbt_valid_to the cut-off of the first run that read other ones (NULL for the
    current version). A user missing from a later cut (deleted, or in quarantine) keeps the last
    version read (hard deletes are ignored).
-#}
{% snapshot users_stored_balances %}
{#- a run at a cut-off not later than the newest one recorded (a re-run of a frozen source, with
    CREDITS_CUTOFF_AT pinned to the past) records nothing: versions never go back in time -#}
{%- set stored = adapter.get_relation(database=this.database, schema=this.schema,
                                      identifier=this.identifier) if execute else none %}

select
    users.id as user_id,
    users.remaining_credit_amount,
    users.extra_credits,
    users.plan_id,
    users.monthly_credit_amount,
    extraction_cutoff.cutoff_at as observed_at
from {{ source('raw', 'users') }} as users
cross join {{ source('raw', 'extraction_cutoff') }} as extraction_cutoff
{%- if stored is not none %}
where extraction_cutoff.cutoff_at > (
    select coalesce(max(recorded.dbt_valid_from), cast('0001-01-01' as {{ dbt.type_timestamp() }}))
    from {{ stored }} as recorded
)
{%- endif %}

{% endsnapshot %}
