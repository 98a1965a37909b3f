{#- The ledger as of the cut-off: see macros/credit_history_rows.sql. -#}
{{ credit_history_rows() }}
