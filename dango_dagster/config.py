"""The project config: the one place every part reads paths and settings from.

A Dango project folder is any folder with ``.dango/``, ``data/`` and a dbt project. Its settings
live in ``.dango/project.yml``; everything has a default, so an existing Dango installation works
without adding anything. Sections this product owns are validated strictly (a typo is an error
that names the key); sections it does not know (Dango's own) are left alone.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dango_dagster.errors import ProjectConfigError

PROJECT_ENV_VAR = "DANGO_PROJECT_DIR"
# The repository this package is installed from (editable install): it is itself the demo project
# and holds what `demo init` and new instances copy (dbt_project/, dagster_home/dagster.yaml).
REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_RELPATH = Path(".dango") / "project.yml"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_MEMORY_RE = re.compile(r"^\d+(\.\d+)?\s*(B|[KMGT]i?B)$", re.IGNORECASE)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WarehouseSettings(_Section):
    # "file": one DuckDB file (one host). "ducklake": a DuckLake catalog (Postgres, shared by every
    # host) with Parquet data under ``data_path``; readers pin a snapshot (docs/SCALING.md).
    kind: Literal["file", "ducklake"] = "file"
    path: str = "data/warehouse.duckdb"
    # ducklake only: the catalog, as DuckDB's ATTACH takes it after ``ducklake:`` (for example
    # ``postgres:dbname=lake host=db user=dango``); unset means env DANGO_LAKE_CATALOG.
    catalog: str | None = None
    # ducklake only: where the Parquet files go (a folder every host sees at the same path).
    data_path: str = "data/lake"


class DbtSettings(_Section):
    # None: ``dbt_project/`` if present, else ``dbt/`` (where an existing Dango keeps it).
    project_dir: str | None = None
    target: str = "dev"
    # Run dbt inside the Dagster run's process (no second Python re-importing dbt, ~2-3 s less per
    # build; docs/BENCHMARKS.md) instead of as a `dbt` subprocess. Same events either way.
    in_process: bool = True


class SourceSettings(_Section):
    """One ingestion source; lands in schema ``raw_<name>``."""

    name: str
    type: Literal["files", "dlt"] = "files"
    # files: a folder of ``<table>.<ext>`` files or ``<table>/`` sub-folders of files.
    path: str | None = None
    format: Literal["csv", "parquet", "jsonl"] = "csv"
    # files: tables expected even before their first file arrives (assets exist from the start,
    # and a load without files says what is missing); folders found on disk are added to them.
    tables: list[str] = Field(default_factory=list)
    # dlt: ``package.module:function`` returning a dlt source or resource.
    ref: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(
                f"source name {value!r} must be lower-case letters, digits and underscores, "
                "starting with a letter (it becomes the schema raw_<name>)"
            )
        return value

    @field_validator("tables")
    @classmethod
    def _valid_tables(cls, value: list[str]) -> list[str]:
        bad = [t for t in value if not _NAME_RE.match(t)]
        if bad:
            raise ValueError(
                f"table names {bad} must be lower-case letters, digits and underscores, "
                "starting with a letter"
            )
        return value

    @field_validator("ref")
    @classmethod
    def _valid_ref(cls, value: str | None) -> str | None:
        if value is not None and (value.count(":") != 1 or not all(value.split(":"))):
            raise ValueError(f"ref {value!r} must look like 'package.module:function'")
        return value

    @property
    def schema_name(self) -> str:
        return f"raw_{self.name}"


class NotebookSettings(_Section):
    users: list[str] = Field(default_factory=list)


class LockSettings(_Section):
    queue_timeout_seconds: Annotated[float, Field(ge=0, le=86400)] = 300.0
    # "file": flock on .dango/state/dbt.lock (one host, shared with Dango). "postgres": an advisory
    # lock on ``dsn`` (several hosts). Env DANGO_LOCK_BACKEND / DANGO_LOCK_DSN / DANGO_LOCK_KEY
    # override these three (docs/SCALING.md).
    backend: Literal["file", "postgres"] = "file"
    dsn: str | None = None
    # The warehouse's name, the same on every host; unset: the project folder's name.
    key: str | None = None

    @field_validator("dsn")
    @classmethod
    def _valid_dsn(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                "dsn must be a postgresql:// URL, e.g. postgresql://dango@db:5432/lock"
            )
        return value


class SnapshotSettings(_Section):
    retention: Annotated[int, Field(ge=1, le=1000)] = 3


class ApiSettings(_Section):
    query_max_rows: Annotated[int, Field(gt=0, le=10_000_000)] = 10_000
    query_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0
    max_sql_bytes: Annotated[int, Field(gt=0, le=10_000_000)] = 100_000
    rate_limit: str = "120/minute"
    anonymous_rate_limit: str = "20/minute"
    memory_limit: str = "1GB"
    threads: Annotated[int, Field(ge=1, le=64)] = 2
    pool_size: Annotated[int, Field(ge=1, le=64)] = 4
    # Answers of deterministic queries, per published snapshot (it never changes, so they stay
    # right until it is replaced); 0 turns the cache off.
    result_cache_mb: Annotated[float, Field(ge=0, le=100_000)] = 64.0

    @field_validator("rate_limit", "anonymous_rate_limit")
    @classmethod
    def _valid_rate_limit(cls, value: str) -> str:
        # Parsed here so a typo fails at startup with the key's name, not on the first request.
        from limits import parse_many

        try:
            items = parse_many(value)
        except ValueError:
            items = []
        if not items or any(item.amount < 1 for item in items):
            raise ValueError(
                f"rate limit {value!r} must look like '120/minute' or '10/second;1000/hour' "
                "(amounts of at least 1)"
            )
        return value

    @field_validator("memory_limit")
    @classmethod
    def _valid_memory_limit(cls, value: str) -> str:
        if not _MEMORY_RE.match(value.strip()):
            raise ValueError(
                f"memory_limit {value!r} must be a size such as '512MB', '1GB' or '2GiB'"
            )
        return value.strip()


class AutomationSettings(_Section):
    # The daily full refresh (sources -> dbt -> snapshot); cron, in `timezone`.
    refresh_cron: str = "0 6 * * *"
    timezone: str = "UTC"
    # The uploads sensor: how often it looks (a stat of the watched files, no read; Dagster's
    # sensor daemon wakes every 5 s, so anything up to 5 means "every wake-up"), and how long the
    # newest file must be quiet before a run starts (a burst of files gives one run, not fifty).
    upload_sensor_interval_seconds: Annotated[int, Field(ge=1, le=86400)] = 1
    upload_settle_seconds: Annotated[float, Field(ge=0, le=3600)] = 1.0
    # Finished status files are deleted after this long.
    status_keep_hours: Annotated[float, Field(gt=0, le=24 * 365)] = 24.0


class _ConfigFile(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    warehouse: WarehouseSettings = WarehouseSettings()
    dbt: DbtSettings = DbtSettings()
    sources: list[SourceSettings] = Field(default_factory=list)
    notebooks: NotebookSettings = NotebookSettings()
    lock: LockSettings = LockSettings()
    snapshots: SnapshotSettings = SnapshotSettings()
    api: ApiSettings = ApiSettings()
    automation: AutomationSettings = AutomationSettings()

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, value: list[SourceSettings]) -> list[SourceSettings]:
        names = [s.name for s in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {', '.join(dupes)}")
        return value


def shipped_file(*parts: str) -> Path:
    """A file shipped in the repository (templates for new projects); clear error if absent."""
    path = REPO_ROOT.joinpath(*parts)
    if not path.exists():
        raise ProjectConfigError(
            f"{path} is missing: dango-dagster must be installed from its repository with "
            "`bash scripts/setup.sh` (an editable install), which ships the demo templates."
        )
    return path


def resolve_project_dir(project_dir: str | os.PathLike[str] | None = None) -> Path:
    """``--project`` if given, else ``DANGO_PROJECT_DIR``, else the current folder."""
    chosen = project_dir or os.environ.get(PROJECT_ENV_VAR) or os.getcwd()
    return Path(chosen).expanduser().resolve()


class ProjectConfig:
    """Validated settings and every derived path of one Dango project folder."""

    def __init__(self, root: Path, settings: _ConfigFile) -> None:
        self.root = root
        self.settings = settings

    # settings --------------------------------------------------------------------------------
    @property
    def sources(self) -> list[SourceSettings]:
        return list(self.settings.sources)

    def source(self, name: str) -> SourceSettings:
        for src in self.settings.sources:
            if src.name == name:
                return src
        known = ", ".join(s.name for s in self.settings.sources) or "none configured"
        raise ProjectConfigError(f"Unknown source {name!r} (configured: {known}).")

    @property
    def notebook_users(self) -> list[str]:
        return list(self.settings.notebooks.users)

    @property
    def lock(self) -> LockSettings:
        return self.settings.lock

    @property
    def snapshots(self) -> SnapshotSettings:
        return self.settings.snapshots

    @property
    def api(self) -> ApiSettings:
        return self.settings.api

    @property
    def automation(self) -> AutomationSettings:
        return self.settings.automation

    # paths -----------------------------------------------------------------------------------
    def _path(self, value: str | os.PathLike[str]) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.root / path

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_RELPATH

    @property
    def dango_dir(self) -> Path:
        return self.root / ".dango"

    @property
    def state_dir(self) -> Path:
        return self.dango_dir / "state"

    @property
    def logs_dir(self) -> Path:
        return self.dango_dir / "logs"

    @property
    def snapshots_dir(self) -> Path:
        """Per-user notebook snapshots: ``warehouse_{user}_{YYYYMMDD_HHMMSS}.duckdb``."""
        return self.dango_dir / "snapshots"

    @property
    def published_dir(self) -> Path:
        """The folder Metabase mounts read-only; holds the published snapshot only."""
        return self.dango_dir / "published"

    @property
    def published_snapshot_path(self) -> Path:
        """The stable snapshot readers open (query API, Metabase); replaced atomically."""
        return self.published_dir / "warehouse.duckdb"

    @property
    def dagster_home(self) -> Path:
        """DAGSTER_HOME for this project: ``$DAGSTER_HOME`` if set, else ``dagster_home/`` when the
        project ships one (the repository's demo), else ``.dango/dagster_home``."""
        env = os.environ.get("DAGSTER_HOME")
        if env:
            return Path(env).expanduser().resolve()
        shipped = self.root / "dagster_home"
        if (shipped / "dagster.yaml").exists():
            return shipped
        return self.dango_dir / "dagster_home"

    @property
    def api_keys_path(self) -> Path:
        return self.dango_dir / "api_keys.json"

    @property
    def audit_log_path(self) -> Path:
        return self.logs_dir / "audit.jsonl"

    @property
    def warehouse_path(self) -> Path:
        return self._path(self.settings.warehouse.path)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @cached_property
    def dbt_project_dir(self) -> Path:
        configured = self.settings.dbt.project_dir
        if configured:
            return self._path(configured)
        for candidate in ("dbt_project", "dbt"):
            if (self.root / candidate / "dbt_project.yml").exists():
                return self.root / candidate
        return self.root / "dbt_project"

    @property
    def dbt_target(self) -> str:
        return self.settings.dbt.target

    def source_path(self, source: SourceSettings) -> Path:
        """Where a files source reads from (default ``data/uploads/<name>``)."""
        return self._path(source.path) if source.path else self.uploads_dir / source.name

    def ensure_dirs(self) -> None:
        for folder in (self.state_dir, self.logs_dir, self.snapshots_dir, self.published_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.warehouse_path.parent.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"ProjectConfig({str(self.root)!r})"


def _format_validation_error(path: Path, exc: ValidationError) -> str:
    lines = [f"{path} is not valid:"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        got = err.get("input")
        got_txt = f" (got {got!r})" if not isinstance(got, dict | list) else ""
        lines.append(f"  - {where}: {err['msg']}{got_txt}")
    lines.append("Fix these keys (see docs/CONFIGURATION.md) and run the command again.")
    return "\n".join(lines)


def load_config(project_dir: str | os.PathLike[str] | None = None) -> ProjectConfig:
    """Read and validate ``.dango/project.yml``; a missing file means all defaults."""
    root = resolve_project_dir(project_dir)
    if not root.is_dir():
        raise ProjectConfigError(
            f"Project folder {root} does not exist. Pass --project DIR or set {PROJECT_ENV_VAR}, "
            "or create one with `dango-dagster demo init DIR`."
        )
    path = root / CONFIG_RELPATH
    raw: Any = {}
    if path.exists():
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ProjectConfigError(f"{path} is not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ProjectConfigError(
                f"{path} must be a mapping of sections (warehouse, dbt, sources, api, ...), "
                f"got {type(raw).__name__}."
            )
    try:
        settings = _ConfigFile.model_validate(raw)
    except ValidationError as exc:
        raise ProjectConfigError(_format_validation_error(path, exc)) from exc
    return ProjectConfig(root, settings)
