"""The private parts of Dagster this package touches, in one fenced place.

Dagster's integration libraries build on ``dagster._core`` classes that the ``dagster`` namespace
does not export. Importing them here (and only here) keeps every such touchpoint visible in one
file when Dagster is upgraded: ``dagster>=1.13,<1.14`` is the range they are known to hold for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# The DB IO manager machinery dagster-duckdb itself is built on (DuckDBIOManager.create_io_manager).
from dagster._core.storage.db_io_manager import DbIOManager, TableSlice

if TYPE_CHECKING:
    # What ``dg.define_asset_job`` returns; only for annotations.
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

__all__ = ["DbIOManager", "TableSlice", "UnresolvedAssetJobDefinition"]
