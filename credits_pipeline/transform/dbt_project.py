"""Where the dbt project lives, and how its manifest gets built.

`@dbt_assets` reads the dbt manifest when the code location loads, so the manifest must exist
before `credits_pipeline.definitions` is imported — also on a fresh clone, where `target/` is
ignored by git. `prepare_manifest()` builds it with `dbt parse` (no database connection needed)
when it is missing or older than any file of the project; the tests, CI and the CLI call it too.
dbt reads the warehouse path from `CREDITS_WAREHOUSE_PATH` only, so every dbt subprocess started
from here gets it (from `settings.warehouse_path()`) through `dbt_environment()`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject

from credits_pipeline import settings
from credits_pipeline.warehouse import cost, memory

DBT_TARGETS = {"duckdb": "duckdb", "bigquery": "bigquery"}

DBT_PROJECT = DbtProject(
    project_dir=settings.DBT_PROJECT_DIR,
    profiles_dir=settings.DBT_PROJECT_DIR,
    target=DBT_TARGETS[settings.warehouse_kind()],
)

# Files whose change makes the manifest stale.
_PROJECT_SOURCE_DIRS = ("models", "macros", "seeds", "tests")
_PROJECT_SOURCE_FILES = ("dbt_project.yml", "profiles.yml")


def dbt_executable() -> str:
    """The `dbt` of this interpreter's environment (a venv's bin/ is not always on PATH)."""
    beside_python = Path(sys.executable).parent / "dbt"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("dbt") or "dbt"


def dbt_cli_resource(project: DbtProject) -> DbtCliResource:
    """A dbt CLI resource for `project`, with this environment's dbt executable."""
    return DbtCliResource(
        project_dir=project,
        profiles_dir=str(project.profiles_dir),
        target=project.target,
        dbt_executable=dbt_executable(),
    )


def dbt_env() -> dict[str, str]:
    """Environment variables every dbt subprocess of the pipeline needs."""
    return {
        settings.WAREHOUSE_PATH_VAR: str(settings.warehouse_path()),
        # dbt's DuckDB runs under the same limit and spill directory as the pipeline's (memory.py)
        **memory.dbt_env(),
        # the run id for the labels of dbt's BigQuery jobs (cost.py)
        **cost.dbt_env(),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        # the dbt of this environment first, for dagster-dbt's own `dbt` lookups (the preparer)
        "PATH": os.pathsep.join([str(Path(dbt_executable()).parent), os.environ.get("PATH", "")]),
    }


@contextlib.contextmanager
def dbt_environment() -> Iterator[None]:
    """Set `dbt_env()` in this process while a dbt subprocess is started, then restore it.

    `DbtCliResource` hands the current environment to dbt and has no per-call `env`; the values
    are put back afterwards so that the pipeline's own settings keep reading their defaults.
    """
    saved = {name: os.environ.get(name) for name in dbt_env()}
    os.environ.update(dbt_env())
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _newest_source_mtime(project_dir: Path) -> float:
    paths = [project_dir / name for name in _PROJECT_SOURCE_FILES]
    for directory in _PROJECT_SOURCE_DIRS:
        paths.extend(p for p in (project_dir / directory).rglob("*") if p.is_file())
    return max((p.stat().st_mtime for p in paths if p.exists()), default=0.0)


def _manifest_database(manifest: Path) -> str | None:
    """The database the manifest's models were parsed against (None when it cannot tell)."""
    try:
        nodes = json.loads(manifest.read_text()).get("nodes", {})
    except (OSError, ValueError):
        return None
    return next(
        (n.get("database") for n in nodes.values() if n.get("resource_type") == "model"), None
    )


def manifest_is_stale(project: DbtProject = DBT_PROJECT) -> bool:
    """True when the manifest is missing, older than a file of the dbt project, or (DuckDB)
    parsed against a warehouse file of another name.

    dbt-duckdb names the database after the warehouse file, and dagster-dbt counts rows through the
    relation names of the manifest it loaded: a manifest parsed for `wh.duckdb` cannot count the
    rows of `warehouse.duckdb`.
    """
    manifest = project.manifest_path
    if not manifest.exists():
        return True
    if manifest.stat().st_mtime < _newest_source_mtime(Path(project.project_dir)):
        return True
    if project.target == DBT_TARGETS["duckdb"]:
        return _manifest_database(manifest) != settings.warehouse_path().stem
    return False


def prepare_manifest(project: DbtProject = DBT_PROJECT, force: bool = False) -> Path:
    """Build `target/manifest.json` (`dbt parse`) when missing or stale; return its path."""
    if force or manifest_is_stale(project):
        # `dbt parse`, guarded against concurrent preparers; the profile needs the warehouse path
        with dbt_environment():
            project.preparer.prepare(project)
    return project.manifest_path
