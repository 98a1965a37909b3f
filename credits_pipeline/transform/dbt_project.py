"""Where the dbt project lives, and how its manifest gets built.

`@dbt_assets` reads the dbt manifest when the code location loads, so the manifest must exist
before `credits_pipeline.definitions` is imported — also on a fresh clone, where `target/` is
ignored by git. `prepare_manifest()` builds it with `dbt parse` (no database connection needed)
when it is missing or older than any file of the project; the tests, CI and the CLI call it too.
The project is parsed for one profile target, the warehouse engine's (`dbt_project_for(kind)`):
which engine runs is decided by `definitions.py` and handed in here, never asked from here.
dbt reads the warehouse path from `CREDITS_WAREHOUSE_PATH` only, so every dbt subprocess started
from here gets it (from `settings.warehouse_path()`) through `dbt_environment()`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject
from packaging import version

from credits_pipeline import settings
from credits_pipeline.warehouse import cost, memory

# The profile target (dbt_transform/profiles.yml) of each warehouse kind (`Warehouse.kind`).
DBT_TARGETS = {"duckdb": "duckdb", "bigquery": "bigquery"}


@functools.cache
def dbt_project_for(warehouse_kind: str) -> DbtProject:
    """The dbt project with the profile target of the warehouse engine `definitions.py` chose.

    Why a function of the kind and not a module constant: dagster-dbt reads the project's
    manifest when the assets are defined, and the manifest depends on the target (relation names,
    the BigQuery-only partitioning); the engine is chosen once, at the edge, and handed in.
    """
    target = DBT_TARGETS[warehouse_kind]
    return DbtProject(
        project_dir=settings.DBT_PROJECT_DIR,
        profiles_dir=settings.DBT_PROJECT_DIR,
        target=target,
        # one manifest per target: a manifest parsed for one engine never defines the other's assets
        target_path=Path("target") / target,
    )


# dbt's own file name for its partial parse, and where ours are kept per profile (see below).
PARTIAL_PARSE_FILE = "partial_parse.msgpack"
PARSE_CACHE_DIR = "partial_parse_cache"
# Variables of dbt_env() that do not reach the profile's connection values (so not the key).
_NOT_IN_PROFILE = frozenset({"PATH", cost.DBT_RUN_ID_VAR})

# Files whose change makes the manifest stale.
_PROJECT_SOURCE_DIRS = ("models", "macros", "seeds", "tests")
_PROJECT_SOURCE_FILES = ("dbt_project.yml", "profiles.yml")


def dbt_executable() -> str:
    """The `dbt` of this interpreter's environment (a venv's bin/ is not always on PATH)."""
    beside_python = Path(sys.executable).parent / "dbt"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("dbt") or "dbt"


def installed_dbt_version(executable: str) -> version.Version | None:
    """The version of dbt-core when `executable` is this interpreter's own `dbt`, else None.

    Why: dagster-dbt asks the executable (`dbt --version`, a subprocess that imports dbt) before
    the first dbt step of every run, only to tell dbt-core from dbt Fusion: 2.9 s of the credits
    step at 100,000 users, as much as dbt's own work in a daily run. The `dbt` beside this
    interpreter is the dbt-core package installed with it, whose version the package metadata
    already says. Any other executable is asked as before.
    """
    if Path(executable) != Path(sys.executable).parent / "dbt":
        return None
    try:
        return version.parse(importlib.metadata.version("dbt-core"))
    except importlib.metadata.PackageNotFoundError:
        return None


class CreditsDbtCliResource(DbtCliResource):
    """dagster-dbt's CLI resource, with the version of this environment's dbt read without
    starting it (`installed_dbt_version`)."""

    @functools.cached_property
    def _cli_version(self) -> version.Version:
        installed = installed_dbt_version(self.dbt_executable)
        return installed if installed is not None else super()._cli_version


def dbt_cli_resource(project: DbtProject) -> DbtCliResource:
    """A dbt CLI resource for `project`, with this environment's dbt executable."""
    # DbtCliResource's own __init__ takes a DbtProject; mypy's pydantic view of a subclass sees
    # only the `str` field it is stored as
    return CreditsDbtCliResource(
        project_dir=project,  # type: ignore[arg-type]
        profiles_dir=str(project.profiles_dir),
        target=project.target,
        dbt_executable=dbt_executable(),
    )


def dbt_env() -> dict[str, str]:
    """Environment variables every dbt subprocess of the pipeline needs."""
    return {
        settings.WAREHOUSE_PATH_VAR: str(settings.warehouse_path()),
        # dbt's DuckDB runs under the machine-sized limit and the pipeline's spill directory
        # (memory.py: the pipeline's own connections may take less, never more)
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


def manifest_is_stale(project: DbtProject) -> bool:
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


def prepare_manifest(project: DbtProject, force: bool = False) -> Path:
    """Build `target/<target>/manifest.json` (`dbt parse`) if missing or stale; return its path."""
    if force or manifest_is_stale(project):
        # `dbt parse`, guarded against concurrent preparers; the profile needs the warehouse path
        with dbt_environment():
            project.preparer.prepare(project)
    return project.manifest_path


def partial_parse_cache(project: DbtProject) -> Path:
    """Where the partial parse for this process's dbt profile is kept between dbt steps.

    dbt parses the whole project again (~10 s on two cores) whenever the profile's connection
    values differ from those its `partial_parse.msgpack` was written with — and the warehouse path
    and the memory settings are such values. dagster-dbt seeds each invocation's fresh target
    directory with the project's `target/partial_parse.msgpack`, written by `dbt parse` for
    whichever warehouse the preparer saw, so every step of every run re-parsed ("Unable to do
    partial parsing because profile has changed"). One cache per profile (the engine and the
    values `dbt_env()` hands dbt) lets the next step on the same warehouse start from a valid one;
    dbt still re-parses whatever changed in the project's files itself.
    """
    profile = sorted((k, v) for k, v in dbt_env().items() if k not in _NOT_IN_PROFILE)
    key = hashlib.sha256(json.dumps([project.target, profile]).encode()).hexdigest()[:16]
    target = Path(project.project_dir) / project.target_path
    return target / PARSE_CACHE_DIR / key / PARTIAL_PARSE_FILE


def seeded_target_path(name: str, project: DbtProject) -> Path:
    """A fresh target directory for one dbt invocation, holding this profile's partial parse.

    dagster-dbt copies the project's own partial parse into an invocation's target directory only
    when none is there yet, so the one placed here is the one dbt reads.
    """
    target = Path(project.project_dir) / project.target_path / f"{name}-{uuid.uuid4().hex[:7]}"
    target.mkdir(parents=True, exist_ok=True)
    cached = partial_parse_cache(project)
    if cached.exists():
        shutil.copyfile(cached, target / PARTIAL_PARSE_FILE)
    return target


def keep_partial_parse(target: Path, project: DbtProject) -> None:
    """Keep the partial parse an invocation wrote in `target` for the next step of its profile.

    Replaced atomically: two runs on the same warehouse never read half a file.
    """
    written = target / PARTIAL_PARSE_FILE
    if not written.exists():
        return
    cached = partial_parse_cache(project)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")
    shutil.copyfile(written, partial)
    os.replace(partial, cached)
