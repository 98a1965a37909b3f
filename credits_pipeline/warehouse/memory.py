"""How much memory DuckDB may use, and where it spills: always set, sized from the machine.

Why: DuckDB's own default is 80% of RAM, per process. Two processes open the warehouse in a run —
the pipeline's (extraction, reconciliation) and dbt's subprocess (the SQL models) — and each would
claim 80%, on a worker that also runs the Dagster instance and the replay's numpy arrays outside
DuckDB's accounting. Measured on issue 10: dbt's process peaked at 6.2 GB and the pipeline's at
2.3 GB on a 100k-user ledger. A limit makes DuckDB spill sorts, joins and aggregates to a temp
directory instead of growing until the kernel kills the worker.

The default is a quarter of physical memory, at least `FLOOR_BYTES` and at most `CEILING_BYTES`:
- a ceiling of 1 GiB, the per-process budget: a process is DuckDB's limit plus what DuckDB does
  not count (the pipeline's Python, Arrow and numpy: ~0.5 GB of imports and the replay's batch),
  and every process must stay under 2 GB (issue 10). Measured at 100,000 users (6.5 M ledger
  rows, `bench/end_to_end.py`): under 1 GiB the full run was faster than under half of a 23 GiB
  machine (209-214 s against 259 s: less memory to allocate and touch, spills that stay in the
  page cache), while the pipeline's process peaked at 7.2 GB under the old default;
- a quarter below that, so a small container keeps room for the Dagster instance, the Python
  around DuckDB, and dbt's process (which runs while the pipeline's process waits, holding its
  Python memory);
- a floor (256 MiB), the smallest limit a whole small demo is tested under: some operators
  (`list` and `string_agg` aggregates, a window over one huge partition) cannot spill, so below it
  "slow" becomes "failed";
- a limit too small for the ledger fails its statement with one message naming the variable to
  raise (`out_of_memory_failure`), not DuckDB's advice to run `SET memory_limit`.
The pipeline's own connections take less when the process already holds much of its budget
(`connection_memory_limit`): every step of a run executes in the one pipeline process, which by
the reconciliation carries Dagster, dbt's in-process adapter and what earlier steps left in the
allocators. Measured at 100,000 users (6.46 M ledger rows): the reconciliation alone peaked at
1,898 MB under 1 GiB (518 MB of imports, 300-400 MB outside DuckDB's accounting: the replay's
batches, numba, Arrow), but the same step of a full run at 2,253 MB; under 512 MiB it took
17.7 s against 16.6 s (15.3 s under 768 MiB: the limit hardly matters to it). So a connection
gets at most `PROCESS_BUDGET_BYTES` minus what the process holds when it opens minus
`OUTSIDE_DUCKDB_BYTES`, never below the floor. dbt's subprocesses start fresh and keep the
machine-sized limit.
`CREDITS_DUCKDB_MEMORY_LIMIT` overrides the figure (any DuckDB size, e.g. `4GB`) everywhere;
`CREDITS_DUCKDB_TEMP_DIRECTORY` the spill directory (default: `<warehouse file>.tmp/` beside the
warehouse, on the same disk that already holds the data, and private to this warehouse).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

import dagster as dg
import pyarrow as pa

from credits_pipeline import settings

FLOOR_BYTES = 256 * 1024**2  # 256 MiB
CEILING_BYTES = 1024**3  # 1 GiB
RAM_FRACTION = 0.25
MIB = 1024**2
# Every process < 2 GB (issue 10), less headroom for what a sampled peak misses.
PROCESS_BUDGET_BYTES = 1792 * MIB
# What a step holds beyond DuckDB's limit and the memory it started with (measured 309-404 MB in
# the reconciliation at 100,000 users under limits of 512-1024 MiB: the replay's batches, numba's
# compiler, Arrow results), with some margin.
OUTSIDE_DUCKDB_BYTES = 448 * MIB
# Metadata keys the warehouse-writing assets record (what limit and spill directory were in force).
MEMORY_LIMIT_METADATA = "duckdb_memory_limit"
TEMP_DIRECTORY_METADATA = "duckdb_temp_directory"
TEMP_DIRECTORY_SUFFIX = ".tmp"


def memory_limit_bytes_for(total_bytes: int | None) -> int:
    """The default limit in bytes for a machine of `total_bytes` of RAM (see `memory_limit_for`)."""
    if not total_bytes or total_bytes <= 0:
        return FLOOR_BYTES
    return min(max(int(total_bytes * RAM_FRACTION), FLOOR_BYTES), CEILING_BYTES)


def as_duckdb_size(limit_bytes: int) -> str:
    """Whole MiB ('1024MiB'), so the value reads the same in DuckDB's `current_setting`, in
    metadata and in dbt's profile."""
    return f"{limit_bytes // MIB}MiB"


def memory_limit_for(total_bytes: int | None) -> str:
    """The default limit for a machine of `total_bytes` of RAM, as a DuckDB size ('1024MiB').

    Pure: a quarter of RAM, clamped to [FLOOR_BYTES, CEILING_BYTES]; unknown RAM gets the floor
    (a machine whose memory cannot be read is not trusted with more).
    """
    return as_duckdb_size(memory_limit_bytes_for(total_bytes))


def limit_within_budget(
    default_bytes: int,
    resident_bytes: int | None,
    budget_bytes: int = PROCESS_BUDGET_BYTES,
    outside_bytes: int = OUTSIDE_DUCKDB_BYTES,
) -> int:
    """The limit for a connection opened by a process that already holds `resident_bytes`.

    Pure. Why: DuckDB's limit is on top of whatever the process holds, so a fixed limit lets a
    process that carries a run's earlier steps pass its budget. What is left of `budget_bytes`
    after the resident memory and `outside_bytes` (what the step itself will hold outside DuckDB),
    at most `default_bytes` and never below `FLOOR_BYTES` (under it some statements fail instead
    of spilling: the budget yields first). Unknown resident memory keeps the default.
    """
    if resident_bytes is None:
        return default_bytes
    left = budget_bytes - resident_bytes - outside_bytes
    return max(FLOOR_BYTES, min(default_bytes, left))


def resident_bytes(status: Path = Path("/proc/self/status")) -> int | None:
    """This process's resident set size now (VmRSS), None where /proc does not tell (macOS)."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def total_memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Physical memory of this machine (or of its cgroup when that is smaller); None if unknown."""
    total: int | None = None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        try:
            for line in meminfo.read_text().splitlines():
                if line.startswith("MemTotal:"):
                    total = int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            total = None
    cgroup = _cgroup_limit_bytes()
    if cgroup and (total is None or cgroup < total):
        return cgroup
    return total


def _cgroup_limit_bytes() -> int | None:
    """A container's memory limit (cgroup v2 `memory.max`, v1 `limit_in_bytes`), if it has one."""
    for path in (
        Path("/sys/fs/cgroup/memory.max"),
        Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
    ):
        try:
            value = path.read_text().strip()
        except OSError:
            continue
        if value.isdigit() and int(value) < 2**60:  # "max" or a huge number: no limit
            return int(value)
    return None


def memory_limit() -> str:
    """The limit in force: `CREDITS_DUCKDB_MEMORY_LIMIT`, else `memory_limit_for(this machine)`."""
    return settings.duckdb_memory_limit() or memory_limit_for(total_memory_bytes())


def temp_directory_for(warehouse: Path) -> Path:
    """The default spill directory of a warehouse file: `<file>.tmp` beside it (pure)."""
    return warehouse.with_name(warehouse.name + TEMP_DIRECTORY_SUFFIX)


def temp_directory(warehouse: Path | None = None) -> Path:
    """`CREDITS_DUCKDB_TEMP_DIRECTORY`, else `temp_directory_for(the warehouse file)`."""
    return settings.duckdb_temp_directory() or temp_directory_for(
        warehouse or settings.warehouse_path()
    )


def connection_memory_limit() -> str:
    """The limit for a connection this process opens now: `CREDITS_DUCKDB_MEMORY_LIMIT`, else
    the machine-sized default reduced to what the process budget leaves (`limit_within_budget`).
    """
    configured = settings.duckdb_memory_limit()
    if configured:
        return configured
    default = memory_limit_bytes_for(total_memory_bytes())
    release_unused_memory()  # what earlier steps freed is not the process's to count
    return as_duckdb_size(limit_within_budget(default, resident_bytes()))


def duckdb_settings(warehouse: Path | None = None, limit: str | None = None) -> dict[str, str]:
    """The `set` statements a DuckDB process runs on the warehouse (setting -> value): `limit`,
    else the machine-sized limit, which is what dbt's subprocesses get (`dbt_env`)."""
    return {
        "memory_limit": limit or memory_limit(),
        "temp_directory": str(temp_directory(warehouse)),
    }


def apply(con: object, warehouse: Path | None = None) -> dict[str, str]:
    """Set the memory limit and spill directory on `con`, a connection of this process, with the
    limit its budget leaves (`connection_memory_limit`); return what was set (for metadata)."""
    values = duckdb_settings(warehouse, connection_memory_limit())
    for name, value in values.items():
        con.execute(f"set {name} = ?", [value])  # type: ignore[attr-defined]
    return values


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()  # glibc (None elsewhere: musl or macOS have no malloc_trim)


def release_unused_memory() -> None:
    """Hand the memory a finished step freed back to the operating system.

    Why: every step of a run executes in the one pipeline process, and what a step frees stays in
    the allocators' pools — Arrow's (the extraction's batches) and glibc's heap arenas (DuckDB's
    and numpy's buffers) — counted in the RSS of every later step. Measured at 100,000 users: the
    reconciliation alone peaks at ~1.6 GB, but ~0.4 GB higher after the extraction steps in the
    same process. Called when a warehouse connection closes; it frees nothing in use.
    """
    pa.default_memory_pool().release_unused()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def out_of_memory_failure(exc: BaseException, values: dict[str, str]) -> dg.Failure:
    """The step's failure when DuckDB ran out of its limit: which limit, and what to change.

    Why: DuckDB's own message ends with advice (`SET memory_limit=...`, fewer threads) that an
    operator cannot act on; the pipeline sets the limit from `CREDITS_DUCKDB_MEMORY_LIMIT`. The
    first line of DuckDB's message says what could not be allocated; `values` are the settings in
    force (`apply`).
    """
    lines = str(exc).strip().splitlines()
    what = lines[0] if lines else type(exc).__name__
    limit, spill = values.get("memory_limit", "?"), values.get("temp_directory", "?")
    return dg.Failure(
        description=(
            f"DuckDB ran out of memory under its limit of {limit} (spill directory {spill}): "
            f"{what}. Raise {settings.DUCKDB_MEMORY_LIMIT_VAR} (e.g. 4GB); if that disk is full, "
            f"point {settings.DUCKDB_TEMP_DIRECTORY_VAR} at a larger one."
        ),
        metadata={MEMORY_LIMIT_METADATA: limit, TEMP_DIRECTORY_METADATA: spill},
        allow_retries=False,
    )


# Environment variables dbt's profile reads (`profiles.yml`: `settings:` of the duckdb output).
DBT_MEMORY_LIMIT_VAR = "CREDITS_DBT_DUCKDB_MEMORY_LIMIT"
DBT_TEMP_DIRECTORY_VAR = "CREDITS_DBT_DUCKDB_TEMP_DIRECTORY"


def dbt_env() -> dict[str, str]:
    """The limit and spill directory, as the variables `profiles.yml` reads, for dbt subprocesses.

    Separate names from the operator's `CREDITS_DUCKDB_*`: these always hold the resolved values,
    so dbt never needs to know how they were sized.
    """
    values = duckdb_settings()
    return {
        DBT_MEMORY_LIMIT_VAR: values["memory_limit"],
        DBT_TEMP_DIRECTORY_VAR: values["temp_directory"],
    }
