"""Extraction of `syllaby_v2` into the warehouse's `raw` schema."""
