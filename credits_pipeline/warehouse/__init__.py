"""The warehouse: where raw copies, credit models, marts and the reconciliation live."""
