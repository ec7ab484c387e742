"""The one place that leans on dlt internals for DuckLake (fenced here; the DuckLake test
exercises it).

dlt's ``ducklake`` destination runs ``LOAD ducklake`` on every new connection *before* it applies
the credentials' ``global_config`` (dlt 1.28, the version beside getdango), so our
``extension_directory`` comes too late and DuckDB tries to download the extension, which fails
offline. dlt also rebuilds the credentials from its own spec class, so a subclass does not
survive; instead ``DuckLakeCredentials.on_resolved`` is wrapped once: for credentials that set an
``extension_directory`` (ours), the explicit LOAD is dropped and the ``ATTACH 'ducklake:...'`` dlt
runs after applying the config autoloads the extension from the laid-out folder.
"""

from __future__ import annotations

from typing import Any

from dlt.destinations.impl.ducklake.configuration import DuckLakeCredentials

_MARK = "_dango_offline_extensions"


def _install() -> None:
    if getattr(DuckLakeCredentials, _MARK, False):
        return
    original = DuckLakeCredentials.on_resolved

    def on_resolved(self: DuckLakeCredentials) -> None:
        original(self)
        if (self.global_config or {}).get("extension_directory"):
            self.extensions = [e for e in self.extensions or [] if e != "ducklake"]

    DuckLakeCredentials.on_resolved = on_resolved  # type: ignore[method-assign]
    setattr(DuckLakeCredentials, _MARK, True)


def ducklake_credentials(name: str, catalog: str, storage: str, config: dict[str, Any]) -> Any:
    """dlt credentials for the lake (built here: dlt ignores ``storage`` in a plain dict)."""
    _install()
    creds = DuckLakeCredentials(name, catalog=catalog, storage=storage)
    creds.global_config = dict(config)
    return creds
