"""The private parts of Dagster this package touches, in one fenced place.

Dagster's integration libraries build on ``dagster._core`` classes that the ``dagster`` namespace
does not export. Importing them here (and only here) keeps every such touchpoint visible in one
file when Dagster is upgraded: ``dagster>=1.13,<1.14`` is the range they are known to hold for.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

import dagster as dg

# The DB IO manager machinery dagster-duckdb itself is built on (DuckDBIOManager.create_io_manager).
from dagster._core.storage.db_io_manager import DbIOManager, TableSlice

if TYPE_CHECKING:
    # What ``QueuedRunCoordinator.get_run_queue_config`` returns; only for annotations.
    # What ``dg.define_asset_job`` returns; only for annotations.
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )
    from dagster._core.run_coordinator.queued_run_coordinator import RunQueueConfig

__all__ = [
    "DbIOManager",
    "RunQueueConfig",
    "TableSlice",
    "UnresolvedAssetJobDefinition",
    "op_tags_of_run",
]

# The Dagster minor versions the snapshot reading below was checked against.
_SNAPSHOT_VERSIONS = ("1.13.",)
_log = logging.getLogger(__name__)


def op_tags_of_run(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[Mapping[str, str]]:
    """The tags of every op a run executes, read from its job snapshot (an asset selection's
    snapshot holds only the selected assets' ops). ``[]`` when they cannot be read.

    The run queue needs them to see which warehouse a run writes before the run has a process:
    no public API tells which ops a run will execute, and an implicit asset job launched from the
    UI carries no job tags. ``instance.get_job_snapshot`` and the snapshot's
    ``node_defs_snapshot.op_def_snaps[].tags`` are internal; on another Dagster version, or if
    they fail, the fallback is ``[]``: the run is not tagged and waits for the lock in its step,
    as without the run queue.
    """
    if not dg.__version__.startswith(_SNAPSHOT_VERSIONS) or not run.job_snapshot_id:
        return []
    try:
        snapshot = instance.get_job_snapshot(run.job_snapshot_id)
        return [dict(op.tags or {}) for op in snapshot.node_defs_snapshot.op_def_snaps]
    except Exception:  # an internal that moved: degrade to the in-step wait, and say so
        _log.warning("Could not read the job snapshot of run %s", run.run_id, exc_info=True)
        return []
