"""Dango's own project files, read the way Dango reads them: ``project.yml``'s ``platform``
section, ``sources.yml`` and ``schedules.yml``.

These files belong to Dango (``dango init``, ``dango source add`` and its web UI write them), so
they are read leniently: every key Dango writes is accepted, keys this package does not use are
ignored, and nothing of dango-dagster's is required in them. Only the values dango-dagster acts on
are checked, with errors that name the file and the key. Dagster-free (the CLI, the lock tools and
the query API import it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dango_dagster.errors import ProjectConfigError

SOURCES_RELPATH = Path(".dango") / "sources.yml"
SCHEDULES_RELPATH = Path(".dango") / "schedules.yml"

# Dango's file sources; both are loaded by its CSVLoader into one table raw_<name>.<name>.
FILE_SOURCE_TYPES = ("csv", "local_files")
# Source types loaded through one of dlt's own core sources.
DLT_CORE_SOURCE_TYPES = ("rest_api", "filesystem", "sql_database", "postgres", "mysql")
_SOURCE_NAME_RE = re.compile(r"^[a-z0-9_]+$")
M = TypeVar("M", bound=BaseModel)


class DangoFileError(ProjectConfigError):
    """One of Dango's project files is unusable; the message names the file, key and fix."""


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class PlatformSettings(_Lenient):
    """``platform:`` of ``.dango/project.yml`` (Dango's defaults; only the keys we act on)."""

    duckdb_path: str = "./data/warehouse.duckdb"
    dbt_project_dir: str | None = None  # None: not written; config.py picks a folder
    data_dir: str = "./data"
    auto_sync: bool = True
    auto_dbt: bool = True
    debounce_seconds: float = Field(default=600, ge=0)
    watch_patterns: list[str] = Field(
        default_factory=lambda: ["*.csv", "*.json", "*.jsonl", "*.ndjson", "*.parquet"]
    )
    watch_directories: list[str] = Field(default_factory=lambda: ["data/uploads"])


class FilesConfig(_Lenient):
    """``csv:`` / ``local_files:`` of a source (Dango's ``CSVSourceConfig``)."""

    directory: str
    file_pattern: str | None = None  # None: Dango's default per type ("*.csv" / "*")


class DangoSource(_Lenient):
    """One entry of ``.dango/sources.yml``; lands in schema ``raw_<name>``."""

    name: str
    type: str
    enabled: bool = True
    description: str | None = None
    empty_sync_policy: Literal["block", "allow"] = "block"
    csv: FilesConfig | None = None
    local_files: FilesConfig | None = None
    rest_api: dict[str, Any] | None = None
    dlt_native: dict[str, Any] | None = None
    filesystem: dict[str, Any] | None = None
    generic_config: dict[str, Any] | None = None
    # Verified sources (stripe, hubspot, ...) keep their settings under a key named after the
    # type; it is kept here so the vendored source function gets it.
    model_config = ConfigDict(extra="allow", frozen=True)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        # Dango's rule (letters, digits, underscores; lower-cased).
        value = str(value).lower()
        if not _SOURCE_NAME_RE.match(value):
            raise ValueError(
                f"source name {value!r} may hold only letters, digits and underscores "
                "(it becomes the schema raw_<name>)"
            )
        return value

    @property
    def schema_name(self) -> str:
        return f"raw_{self.name}"

    @property
    def is_files(self) -> bool:
        return self.type in FILE_SOURCE_TYPES

    @property
    def files(self) -> FilesConfig:
        """The ``csv``/``local_files`` settings of a file source (clear error if missing)."""
        found = self.csv if self.type == "csv" else self.local_files
        if found is None:
            raise DangoFileError(
                f"source {self.name!r} in .dango/sources.yml has type {self.type!r} but no "
                f"`{self.type}:` section with `directory:`; add it (as `dango source add` does)."
            )
        return found

    @property
    def file_pattern(self) -> str:
        pattern = self.files.file_pattern
        if pattern:
            return pattern
        return "*.csv" if self.type == "csv" else "*"

    def type_config(self) -> dict[str, Any]:
        """The settings under the key named after the type (``stripe:``), else generic_config."""
        extra = self.model_extra or {}
        own = getattr(self, self.type, None) if self.type in type(self).model_fields else None
        found = own if own is not None else extra.get(self.type)
        if isinstance(found, BaseModel):
            found = found.model_dump()
        return dict(found or self.generic_config or {})


class DangoSchedule(_Lenient):
    """One entry of ``.dango/schedules.yml`` (Dango's ``ScheduleConfig``)."""

    name: str
    type: str = "sync"  # sync (sources + dbt), sync_only, dbt, script
    cron: str
    sources: list[str] = Field(default_factory=list)
    enabled: bool = True
    timezone: str | None = None
    dbt_command: str | None = None
    timeout_minutes: float | None = None
    description: str | None = None


def _read_yaml(path: Path) -> Any:
    if not path.exists():
        return None
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DangoFileError(f"{path} is not valid YAML: {exc}") from exc


def _errors(path: Path, what: str, exc: ValidationError) -> DangoFileError:
    lines = [f"{path} is not valid:"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        lines.append(f"  - {what}.{where}: {err['msg']}")
    lines.append("Fix these keys (Dango's format, see docs/CONFIGURATION.md) and try again.")
    return DangoFileError("\n".join(lines))


def _entries(path: Path, key: str) -> list[Any]:
    raw = _read_yaml(path)
    if raw is None:
        return []
    entries = raw.get(key) if isinstance(raw, dict) else None
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise DangoFileError(f"{path}: `{key}:` must be a list, got {type(entries).__name__}.")
    return entries


def _models(path: Path, key: str, model: type[M]) -> list[M]:
    """The entries of ``key:`` in ``path`` as ``model``s; errors name the file and entry."""
    found: list[M] = []
    for i, entry in enumerate(_entries(path, key)):
        try:
            found.append(model.model_validate(entry))
        except ValidationError as exc:
            raise _errors(path, f"{key}.{i}", exc) from exc
    return found


def load_sources(root: Path) -> list[DangoSource]:
    """Every source of ``.dango/sources.yml`` (disabled ones included; see ``enabled``)."""
    path = root / SOURCES_RELPATH
    sources = _models(path, "sources", DangoSource)
    names = [s.name for s in sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DangoFileError(f"{path}: source names must be unique; repeated: {', '.join(dupes)}.")
    return sources


def load_schedules(root: Path) -> list[DangoSchedule]:
    """Every schedule of ``.dango/schedules.yml`` (disabled ones included)."""
    return _models(root / SCHEDULES_RELPATH, "schedules", DangoSchedule)


def load_platform(raw_project: dict[str, Any], path: Path) -> PlatformSettings:
    platform = raw_project.get("platform") or {}
    try:
        return PlatformSettings.model_validate(platform)
    except ValidationError as exc:
        raise _errors(path, "platform", exc) from exc
