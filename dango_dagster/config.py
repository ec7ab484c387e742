"""The project config: the one place every part reads paths and settings from.

A Dango project folder is what ``dango init`` makes. Dango's files are the truth and are read the
way Dango reads them (:mod:`dango_dagster.dango_project`): ``.dango/project.yml`` (the warehouse at
``platform.duckdb_path``, the dbt project at ``platform.dbt_project_dir``, data at
``platform.data_dir``; every other key accepted and ignored), ``.dango/sources.yml`` and
``.dango/schedules.yml``. dango-dagster's own settings (lock queue, notebooks, snapshots, API
extras, automation) live in ``.dango/dango_dagster.yml``, a file Dango never rewrites, checked
strictly (a typo is an error naming the key) and all defaulted, so a Dango project needs none.
"""

from __future__ import annotations

import importlib.resources
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from dango_dagster.dango_project import (
    SCHEDULES_RELPATH,
    SOURCES_RELPATH,
    DangoFileError,
    DangoSchedule,
    DangoSource,
    PlatformSettings,
    load_platform,
    load_schedules,
    load_sources,
)
from dango_dagster.errors import ProjectConfigError
from dango_dagster.settings import (
    ApiSettings,
    AutomationSettings,
    LockSettings,
    SnapshotSettings,
    _ConfigFile,
)

PROJECT_ENV_VAR = "DANGO_PROJECT_DIR"
# The repository this package is installed from (editable install): it is itself the demo project
# and holds what `demo init` and new instances copy (dbt_project/, dagster_home/dagster.yaml).
REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_RELPATH = Path(".dango") / "project.yml"  # Dango's
SETTINGS_RELPATH = Path(".dango") / "dango_dagster.yml"  # ours
# Sections of ours that older versions read from project.yml: still read from there for a
# transition (dango_dagster.yml wins), since Dango drops them the next time it saves its config.
_TRANSITION_SECTIONS = ("warehouse", "dbt", "notebooks", "lock", "snapshots", "api", "automation")


def shipped_file(*parts: str) -> Path:
    """A template new projects are made from (demo config, dbt project, dagster.yaml, ...).

    From a wheel: package data under ``dango_dagster/templates/demo/``, read with
    ``importlib.resources`` (setup.py copies the repository's demo files there at build time).
    From a checkout (editable install): the repository's own files, the demo it is itself.
    """
    packaged = importlib.resources.files("dango_dagster") / "templates" / "demo"
    base = Path(str(packaged)) if packaged.is_dir() else REPO_ROOT
    path = base.joinpath(*parts)
    if not path.exists():
        raise ProjectConfigError(
            f"{path} is missing: this dango-dagster installation has no demo templates.",
            hint="Reinstall dango-dagster (pip install dango-dagster, or `bash scripts/setup.sh` "
            "in a checkout).",
        )
    return path


def resolve_project_dir(project_dir: str | os.PathLike[str] | None = None) -> Path:
    """``--project`` if given, else ``DANGO_PROJECT_DIR``, else the current folder."""
    chosen = project_dir or os.environ.get(PROJECT_ENV_VAR) or os.getcwd()
    return Path(chosen).expanduser().resolve()


class ProjectConfig:
    """Validated settings and every derived path of one Dango project folder."""

    def __init__(
        self,
        root: Path,
        settings: _ConfigFile,
        platform: PlatformSettings | None = None,
        sources: list[DangoSource] | None = None,
        schedules: list[DangoSchedule] | None = None,
        dbt_project_dir: str | None = None,
    ) -> None:
        self.root = root
        self.settings = settings
        self.platform = platform or PlatformSettings()
        self._sources = list(sources or [])
        self.schedules = list(schedules or [])
        self._dbt_project_dir = dbt_project_dir or self.platform.dbt_project_dir

    # settings --------------------------------------------------------------------------------
    @property
    def all_sources(self) -> list[DangoSource]:
        """Every source of ``.dango/sources.yml``, disabled ones included."""
        return list(self._sources)

    @property
    def sources(self) -> list[DangoSource]:
        """The enabled sources: each one is an ingestion asset group ``raw_<name>``."""
        return [s for s in self._sources if s.enabled]

    def source(self, name: str) -> DangoSource:
        for src in self._sources:
            if src.name == name:
                if not src.enabled:
                    raise ProjectConfigError(
                        f"Source {name!r} is disabled in {self.sources_path} (enabled: false); "
                        "enable it there (or `dango source enable`) to load it."
                    )
                return src
        known = ", ".join(s.name for s in self.sources) or "none configured"
        raise ProjectConfigError(
            f"Unknown source {name!r} (configured in {self.sources_path}: {known})."
        )

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
        """Dango's ``.dango/project.yml``."""
        return self.root / CONFIG_RELPATH

    @property
    def settings_path(self) -> Path:
        """dango-dagster's ``.dango/dango_dagster.yml``."""
        return self.root / SETTINGS_RELPATH

    @property
    def sources_path(self) -> Path:
        return self.root / SOURCES_RELPATH

    @property
    def schedules_path(self) -> Path:
        return self.root / SCHEDULES_RELPATH

    @property
    def dango_dir(self) -> Path:
        return self.root / ".dango"

    @property
    def state_dir(self) -> Path:
        return self.dango_dir / "state"

    @property
    def own_state_dir(self) -> Path:
        """dango-dagster's working files (loader caches, staging databases): a folder of its
        own, so Dango's cleanup never deletes them and ours never touches Dango's."""
        return self.state_dir / "dango_dagster"

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
        """``platform.duckdb_path`` (Dango's default ``./data/warehouse.duckdb``)."""
        return self._path(self.platform.duckdb_path)

    @property
    def data_dir(self) -> Path:
        """``platform.data_dir`` (Dango's default ``./data``)."""
        return self._path(self.platform.data_dir)

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def watch_dirs(self) -> list[Path]:
        """``platform.watch_directories``: where Dango's watcher (and our uploads sensor) look."""
        return [self._path(d) for d in self.platform.watch_directories]

    @cached_property
    def dbt_project_dir(self) -> Path:
        """``platform.dbt_project_dir``; when Dango never wrote one, ``dbt/`` (Dango's default)
        unless only ``dbt_project/`` holds a dbt project."""
        if self._dbt_project_dir:
            return self._path(self._dbt_project_dir)
        for candidate in ("dbt", "dbt_project"):
            if (self.root / candidate / "dbt_project.yml").exists():
                return self.root / candidate
        return self.root / "dbt"

    @property
    def upload_settle_seconds(self) -> float:
        """How long a source folder must be quiet before the uploads sensor starts a run."""
        own = self.settings.automation.upload_settle_seconds
        return own if own is not None else float(self.platform.debounce_seconds)

    @property
    def dbt_target(self) -> str:
        if self.settings.dbt.target:
            return self.settings.dbt.target
        return "ducklake" if self.settings.warehouse.kind == "ducklake" else "dev"

    def watched(self, source: DangoSource) -> bool:
        """Whether Dango's watcher would see a file source: its folder lies under one of
        ``platform.watch_directories``."""
        folder = self.source_dir(source).resolve()
        return any(folder.is_relative_to(d.resolve()) for d in self.watch_dirs)

    def source_dir(self, source: DangoSource) -> Path:
        """The folder a csv/local_files source reads (its ``directory``, project-relative)."""
        return self._path(source.files.directory)

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


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ProjectConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ProjectConfigError(f"{path} must be a mapping of sections, got {type(raw).__name__}.")
    return raw


def _our_sections(project: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """Our settings: ``dango_dagster.yml`` over the same sections found in ``project.yml``.

    ``project.yml``'s ``api:`` is Dango's too (``query_max_rows``, ``query_timeout_seconds``,
    ``mcp_mask_pii``...): only the keys we define are taken from it.
    """
    merged: dict[str, Any] = {}
    for section in _TRANSITION_SECTIONS:
        old = project.get(section)
        if isinstance(old, dict):
            model = _ConfigFile.model_fields[section].annotation
            assert isinstance(model, type) and issubclass(model, BaseModel)
            merged[section] = {k: v for k, v in old.items() if k in model.model_fields}
    for section, value in ours.items():
        if isinstance(value, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **value}
        else:
            merged[section] = value
    return merged


def _legacy(project: dict[str, Any], section: str, key: str) -> str | None:
    value = project.get(section)
    found = value.get(key) if isinstance(value, dict) else None
    return str(found) if found else None


def load_config(project_dir: str | os.PathLike[str] | None = None) -> ProjectConfig:
    """Read Dango's files and ours; missing files and keys mean the defaults."""
    root = resolve_project_dir(project_dir)
    if not root.is_dir():
        raise ProjectConfigError(
            f"Project folder {root} does not exist. Pass --project DIR or set {PROJECT_ENV_VAR}, "
            "or create one with `dango-dagster demo init DIR`."
        )
    project_path = root / CONFIG_RELPATH
    settings_path = root / SETTINGS_RELPATH
    project = _read_mapping(project_path)
    ours = _read_mapping(settings_path)
    if isinstance(project.get("sources"), list):
        raise ProjectConfigError(
            f"{project_path} has a `sources:` list (dango-dagster's old format). Sources now "
            f"live in {root / SOURCES_RELPATH} in Dango's format (see docs/CONFIGURATION.md); "
            "move them there and remove `sources:` from project.yml."
        )
    try:
        settings = _ConfigFile.model_validate(_our_sections(project, ours))
    except ValidationError as exc:
        raise ProjectConfigError(_format_validation_error(settings_path, exc)) from exc
    try:
        platform = load_platform(project, project_path)
        sources = load_sources(root)
        schedules = load_schedules(root)
    except DangoFileError as exc:
        raise ProjectConfigError(str(exc)) from exc
    # Older dango-dagster projects named these in project.yml; platform.* wins when Dango wrote it.
    legacy_dbt = _legacy(project, "dbt", "project_dir")
    legacy_wh = _legacy(project, "warehouse", "path")
    if legacy_wh and "duckdb_path" not in (project.get("platform") or {}):
        platform = platform.model_copy(update={"duckdb_path": legacy_wh})
    return ProjectConfig(
        root,
        settings,
        platform=platform,
        sources=sources,
        schedules=schedules,
        dbt_project_dir=platform.dbt_project_dir or legacy_dbt,
    )
