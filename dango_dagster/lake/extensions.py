"""DuckDB extensions from PyPI packages, laid out where DuckDB looks for them (offline).

DuckLake needs DuckDB's ``ducklake`` and ``postgres_scanner`` extensions. DuckDB downloads them on
first use, which a machine without internet (or a locked-down server) cannot do. PyPI ships them
as packages (``duckdb-extension-ducklake``, ``duckdb-extension-postgres_scanner``) for duckdb
1.5.5, holding ``duckdb_extension_<name>/extensions/v<version>/<name>.duckdb_extension`` with no
platform folder. DuckDB looks in ``<extension_directory>/v<version>/<platform>/``, so
:func:`layout_extensions` links the installed files there once (``scripts/setup.sh`` runs it for
the environment that has them), and :func:`duckdb_config` points connections at that folder with
downloads off. duckdb 2.0 has no such packages and refuses 1.5.5's builds: DuckLake runs in the
duckdb 1.5.5 environment only.

``python -m dango_dagster.lake.extensions`` lays them out and prints the folder.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["EXTENSION_DIR_ENV", "duckdb_config", "extension_directory", "layout_extensions"]

EXTENSION_DIR_ENV = "DANGO_DUCKDB_EXTENSION_DIR"
_PREFIX = "duckdb_extension_"


def extension_directory() -> Path:
    """``$DANGO_DUCKDB_EXTENSION_DIR``, else ``duckdb_extensions/`` inside this environment."""
    env = os.environ.get(EXTENSION_DIR_ENV)
    return Path(env) if env else Path(sys.prefix) / "duckdb_extensions"


def _platform() -> str:
    import duckdb

    with duckdb.connect() as con:
        row = con.execute("PRAGMA platform").fetchone()
    return str(row[0]) if row else "linux_amd64"


def _packaged() -> dict[str, Path]:
    """Extension name -> packaged file, for the installed duckdb version."""
    import duckdb

    version = f"v{duckdb.__version__}"
    found: dict[str, Path] = {}
    for dist in importlib.metadata.distributions():
        for file in dist.files or ():
            parts = Path(file).parts
            if (
                len(parts) == 4
                and parts[0].startswith(_PREFIX)
                and parts[1:3] == ("extensions", version)
                and parts[3].endswith(".duckdb_extension")
            ):
                name = parts[3].removesuffix(".duckdb_extension")
                found[name] = Path(str(dist.locate_file(file)))
    return found


def layout_extensions(target: Path | None = None) -> dict[str, Path]:
    """Link every packaged extension into ``target``'s DuckDB layout; idempotent.

    Returns name -> laid-out path. Symlinks, or copies where the filesystem has none.
    """
    import duckdb

    root = target or extension_directory()
    folder = root / f"v{duckdb.__version__}" / _platform()
    folder.mkdir(parents=True, exist_ok=True)
    laid: dict[str, Path] = {}
    for name, source in _packaged().items():
        dest = folder / f"{name}.duckdb_extension"
        if not (dest.exists() and dest.resolve() == source.resolve()):
            tmp = dest.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)
            try:
                tmp.symlink_to(source)
            except OSError:
                import shutil

                shutil.copyfile(source, tmp)
            os.replace(tmp, dest)
        laid[name] = dest
    return laid


def duckdb_config() -> dict[str, Any]:
    """Connection settings that load the laid-out extensions and never download anything."""
    return {
        "extension_directory": str(extension_directory()),
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": True,
    }


if __name__ == "__main__":
    laid = layout_extensions()
    for name, path in sorted(laid.items()):
        print(f"{name}: {path}")
    print(f"extension_directory: {extension_directory()}")
