"""The project settings a code location's definitions were built from, shared by its runs.

Definitions, the gate and the assets must agree on one ``ProjectConfig``: reading
``.dango/project.yml`` again on every lock acquisition would cost a YAML parse per write and could
let a run see settings its definitions were not built with. ``remember`` records the config the
definitions were built from; ``config_for`` hands it out (and loads it once for a folder nobody
built definitions for, e.g. a gate used on its own).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from dango_dagster.config import ProjectConfig, load_config, resolve_project_dir

_CONFIGS: dict[Path, ProjectConfig] = {}
_GUARD = threading.Lock()


def remember(config: ProjectConfig) -> ProjectConfig:
    """Make ``config`` the settings of its folder for this process (a reload replaces them)."""
    with _GUARD:
        _CONFIGS[config.root] = config
    return config


def config_for(project_dir: str | os.PathLike[str] | None) -> ProjectConfig:
    """The settings of ``project_dir``: the ones definitions were built from, else loaded once."""
    root = resolve_project_dir(project_dir)
    with _GUARD:
        known = _CONFIGS.get(root)
    return known if known is not None else remember(load_config(root))


def remembered() -> list[ProjectConfig]:
    """The settings of every project folder this process built definitions for (or loaded)."""
    with _GUARD:
        return list(_CONFIGS.values())
