"""Profiles every DuckDB statement run on the warehouse file, in whichever process runs it.

Used only by `bench/scan_profile.py`, which puts this directory on PYTHONPATH of the
`credits-pipeline materialize` it starts (Python imports `sitecustomize` at start-up, so the
pipeline's process and dbt's subprocesses alike are covered). When `CREDITS_SCAN_PROFILE_DIR` is
set, `duckdb.connect` on `CREDITS_WAREHOUSE_PATH` returns a thin proxy whose connections and
cursors run with DuckDB's JSON profiling on; after each statement the proxy reads the profile and
appends one line per table scan (table, rows scanned) to `<dir>/<pid>.jsonl`. Statements run as
relations (`con.sql(...)`) are not profiled. Does nothing when the variable is unset.
"""

import itertools
import json
import os
import threading

_DIR = os.environ.get("CREDITS_SCAN_PROFILE_DIR")
_WAREHOUSE = os.environ.get("CREDITS_WAREHOUSE_PATH")

if _DIR and _WAREHOUSE:
    import duckdb

    _real_connect = duckdb.connect
    try:
        with open("/proc/self/cmdline", "rb") as _cmdline:
            _args = [a.decode() for a in _cmdline.read().split(b"\0")[:2]]
    except OSError:
        _args = []
    _PROCESS = "dbt" if any(os.path.basename(a) == "dbt" for a in _args) else "pipeline"
    _counter = itertools.count()
    _lock = threading.Lock()

    def _scans(node, out):
        if node.get("operator_type") == "TABLE_SCAN":
            table = (node.get("extra_info") or {}).get("Table")
            if table:
                out.append((table, int(node.get("operator_rows_scanned") or 0)))
        for child in node.get("children", []):
            _scans(child, out)

    class _Profiled:
        """A connection or cursor whose statements leave a JSON profile, harvested as they end.

        DuckDB writes a statement's profile when its result is consumed (a SELECT: on fetch), so
        the pending profile is read before each statement, after each statement and fetch, and at
        close; each file read is deleted, so no profile is counted twice.
        """

        def __init__(self, con):
            self._con = con
            self._rows = None  # the rest of a result read row by row (fetchone/fetchmany)
            self._profile = os.path.join(_DIR, f"{os.getpid()}_{next(_counter)}.json")
            # one call: profiling on and its file set together (else a profile goes to stdout)
            con.execute(
                "set enable_profiling = 'json'; "
                f"set profiling_output = '{self._profile}'; "
                "set profiling_coverage = 'ALL'; set profiling_mode = 'detailed'"
            )
            self._record()

        def _record(self):
            try:
                with open(self._profile) as handle:
                    profile = json.load(handle)
                os.remove(self._profile)
            except (OSError, ValueError):
                return
            scans = []
            _scans(profile, scans)
            if not scans:
                return
            sql = str(profile.get("query_name", ""))[:300]
            line = json.dumps({"process": _PROCESS, "sql": sql, "scans": scans})
            with _lock, open(os.path.join(_DIR, f"{os.getpid()}.jsonl"), "a") as out:
                out.write(line + "\n")

        def _drained(self):
            # DuckDB writes a profile once the result is consumed: read it all, serve rows after
            if self._rows is None:
                self._rows = list(self._con.fetchall())
                self._record()
            return self._rows

        def fetchone(self):
            rows = self._drained()
            return rows.pop(0) if rows else None

        def fetchmany(self, size=1):
            rows = self._drained()
            taken, self._rows = rows[:size], rows[size:]
            return taken

        def fetchall(self):
            if self._rows is not None:
                rows, self._rows = self._rows, []
                return rows
            rows = self._con.fetchall()
            self._record()
            return rows

        def execute(self, sql, *args, **kwargs):
            self._rows = None
            self._record()
            self._con.execute(sql, *args, **kwargs)
            self._record()
            return self

        def executemany(self, sql, *args, **kwargs):
            self._rows = None
            self._record()
            self._con.executemany(sql, *args, **kwargs)
            self._record()
            return self

        def cursor(self):
            return _Profiled(self._con.cursor())

        def close(self):
            self._record()
            self._con.close()
            self._record()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

        def __getattr__(self, name):
            attribute = getattr(self._con, name)
            if not (callable(attribute) and name.startswith(("fetch", "df", "arrow", "pl"))):
                return attribute

            def fetched(*args, **kwargs):
                result = attribute(*args, **kwargs)
                self._record()
                return result

            return fetched

    def _connect(database=":memory:", *args, **kwargs):
        con = _real_connect(database, *args, **kwargs)
        if str(database) == _WAREHOUSE:
            return _Profiled(con)
        return con

    duckdb.connect = _connect
