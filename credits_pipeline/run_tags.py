"""Tags the pipeline writes on its Dagster runs, spelled once.

A run's tags are what the Dagster UI filters and shows at a glance: a green "Success" with six
failed ERROR checks must say so on the run itself, and a run whose process was killed must be
recognisable as such by the next `credits-pipeline` start (the process id and host that ran it),
without guessing about runs other launchers own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

TRIGGER_TAG = "credits/trigger"
TRIGGER_CLI = "cli"
PID_TAG = "credits/pid"
HOST_TAG = "credits/host"
FAILED_ERROR_CHECKS_TAG = "credits/failed_error_checks"
FAILED_WARN_CHECKS_TAG = "credits/failed_warn_checks"


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (signal 0 probes without killing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def run_process_is_gone(
    tags: Mapping[str, str], host: str, alive: Callable[[int], bool] = process_alive
) -> bool:
    """Whether a CLI run's process is known dead: started here, by a process that no longer exists.

    Runs launched by anything else (the UI, the daemon) or on another host are never judged: only
    the process that ran them could tell, and Dagster's own run monitoring owns them.
    """
    if tags.get(TRIGGER_TAG) != TRIGGER_CLI or tags.get(HOST_TAG) != host:
        return False
    try:
        pid = int(tags.get(PID_TAG, ""))
    except ValueError:
        return False
    return pid != os.getpid() and not alive(pid)
