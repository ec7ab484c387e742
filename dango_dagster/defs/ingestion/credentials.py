"""Credentials from where Dango keeps them, for dlt sources built in any working folder.

Dango loads ``<project>/.env`` into the environment (never overriding a variable already set) and
changes into the project folder so dlt finds ``.dlt/secrets.toml`` and ``.dlt/config.toml``.
A Dagster process serves from wherever it was started, so instead of changing folder the two
TOML files are flattened into dlt's environment variable names (``[sources.stripe] api_key``
-> ``SOURCES__STRIPE__API_KEY``), which dlt reads first. ``.dango/.env`` is read too. Nothing
already in the environment is overridden, so a deployment's own variables win.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from dango_dagster.config import ProjectConfig

_loaded: set[Path] = set()


def _dotenv(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _flatten(prefix: str, table: dict[str, Any], out: dict[str, str]) -> None:
    for key, value in table.items():
        name = f"{prefix}__{key}".upper() if prefix else key.upper()
        if isinstance(value, dict):
            _flatten(name, value, out)
        elif isinstance(value, list | bool | int | float):
            import json

            out[name] = json.dumps(value)
        else:
            out[name] = str(value)


def _toml(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if path.is_file():
        try:
            _flatten("", tomllib.loads(path.read_text(encoding="utf-8")), out)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path} is not valid TOML: {exc}. Fix it, then load again.") from exc
    return out


def load_credentials(config: ProjectConfig) -> None:
    """Put the project's credentials into the environment (once per process and project)."""
    if config.root in _loaded:
        return
    found: dict[str, str] = {}
    # Lowest priority first: later files win over earlier ones, the environment over all.
    for values in (
        _toml(config.root / ".dlt" / "config.toml"),
        _toml(config.root / ".dlt" / "secrets.toml"),
        _dotenv(config.dango_dir / ".env"),
        _dotenv(config.root / ".env"),
    ):
        found.update(values)
    for key, value in found.items():
        os.environ.setdefault(key, value)
    _loaded.add(config.root)
