"""A vectorised pandera check that a text column holds valid JSON.

`meta` columns arrive as JSON text; a malformed value must be quarantined rather than loaded,
because the credit models parse it. Parsing millions of values with `json.loads` one by one costs
seconds, so the check hands the whole column to DuckDB's `json_valid`, which validates it in
native code.
"""

from __future__ import annotations

import duckdb
import pandas as pd
from pandera import extensions

CHECK_NAME = "valid_json"
_registered = False


def json_validity(values: pd.Series) -> pd.Series:
    """True where the value is NULL or valid JSON text; False where it is not."""
    if values.empty:
        return pd.Series([], dtype=bool, index=values.index)
    frame = pd.DataFrame(
        {"v": values.astype(object).where(values.notna(), None).reset_index(drop=True)}
    )
    con = duckdb.connect()
    try:
        con.register("values_to_check", frame)
        valid = con.execute(
            "select coalesce(json_valid(v::varchar), true) from values_to_check"
        ).fetchnumpy()
    finally:
        con.close()
    result = next(iter(valid.values()))
    return pd.Series(result.astype(bool), index=values.index)


def register_json_check() -> None:
    """Register `valid_json` as a pandera Field check (idempotent)."""
    global _registered
    if _registered:
        return

    @extensions.register_check_method(check_type="vectorized")
    def valid_json(pandas_obj: pd.Series) -> pd.Series:
        return json_validity(pandas_obj)

    _registered = True
