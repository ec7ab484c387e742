"""The private parts of Dagster this package touches, in one fenced place.

Dagster's integration libraries build on ``dagster._core`` classes that the ``dagster`` namespace
does not export. Importing them here (and only here) keeps every such touchpoint visible in one
file when Dagster is upgraded: ``dagster>=1.13,<1.14`` is the range they are known to hold for.
The warm run launcher's touchpoints (below) are imported on first use and checked against that
range at run time, so a newer Dagster degrades to the stock launcher instead of failing.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING

import dagster as dg

# The DB IO manager machinery dagster-duckdb itself is built on (DuckDBIOManager.create_io_manager).
from dagster._core.storage.db_io_manager import DbIOManager, TableSlice

if TYPE_CHECKING:
    # What ``dg.define_asset_job`` returns; only for annotations.
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

    # What ``QueuedRunCoordinator.get_run_queue_config`` returns; only for annotations.
    from dagster._core.run_coordinator.queued_run_coordinator import RunQueueConfig

__all__ = [
    "DAGSTER_SERIES",
    "code_server_identity",
    "DbIOManager",
    "launcher_internals",
    "op_tags_of_run",
    "RunQueueConfig",
    "TableSlice",
    "UnresolvedAssetJobDefinition",
    "warm_launch_unsupported",
]

# The Dagster release series every private touchpoint below was checked against.
DAGSTER_SERIES = "1.13"


def _in_series(version: str) -> bool:
    """Whether ``version`` is in the release series ``DAGSTER_SERIES`` the private APIs
    below were checked against (each has a public fallback outside it)."""
    return ".".join(version.split(".")[:2]) == DAGSTER_SERIES


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
    if not _in_series(dg.__version__) or not run.job_snapshot_id:
        return []
    try:
        snapshot = instance.get_job_snapshot(run.job_snapshot_id)
        return [dict(op.tags or {}) for op in snapshot.node_defs_snapshot.op_def_snaps]
    except Exception:  # an internal that moved: degrade to the in-step wait, and say so
        _log.warning("Could not read the job snapshot of run %s", run.run_id, exc_info=True)
        return []


# -- the warm run launcher (defs/run_launcher.py, defs/warm_worker.py) --------------------------
# A run handed to a pre-started worker is executed exactly as ``dagster api execute_run`` executes
# it (``dagster._cli.api._execute_run_command_body`` under ``capture_interrupts``), from the run's
# own code origin (``recon_repository_from_origin``). The launcher identifies the code server a
# run was planned on by ``GrpcServerCodeLocation.server_id`` (new on every reload) and tells a
# local code server by its gRPC client's socket or host. The health check answers with Dagster's
# ``CheckRunHealthResult``. Written against the release series in ``DAGSTER_SERIES``; outside
# it the launcher is exactly ``DefaultRunLauncher`` and says why once.


def warm_launch_unsupported(version: str | None = None) -> str | None:
    """Why runs cannot be handed to pre-started workers with this Dagster, or None when they can.

    ``version``: the Dagster version to judge (default: the installed one).
    """
    import os

    import dagster

    found = version or dagster.__version__
    if not _in_series(found):
        return (
            f"Dagster {found} is outside the {DAGSTER_SERIES}.x series the warm run launcher "
            f"was written against (it uses Dagster's private execute-run entry point); runs start "
            f"the stock way, in a new process each"
        )
    if os.name != "posix":
        return "pre-started run workers need a POSIX system; runs start the stock way"
    try:
        launcher_internals()
    except (ImportError, AttributeError) as exc:
        return (
            f"a Dagster internal the warm run launcher needs is missing ({exc}); runs start the "
            "stock way"
        )
    return None


@functools.cache
def launcher_internals() -> SimpleNamespace:
    """The private Dagster objects the warm launcher and its worker use (imported once)."""
    from dagster._cli.api import _execute_run_command_body
    from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
    from dagster._utils.hosted_user_process import recon_repository_from_origin
    from dagster._utils.interrupts import capture_interrupts

    return SimpleNamespace(
        execute_run_body=_execute_run_command_body,
        capture_interrupts=capture_interrupts,
        recon_repository_from_origin=recon_repository_from_origin,
        CheckRunHealthResult=CheckRunHealthResult,
        WorkerStatus=WorkerStatus,
    )


def code_server_identity(code_location: object) -> tuple[str, bool] | None:
    """``(server_id, on_this_host)`` of the gRPC code server behind a code location, asked live;
    None when it is not a gRPC code location or its server does not answer.

    The server id changes whenever the code location is reloaded (``dagster dev`` restarts its
    code server then), so a worker that loaded the definitions under another id is out of date.
    It is asked of the server itself, not taken from the daemon's workspace, which learns of a
    reload only some seconds later.
    """
    import socket

    client = getattr(code_location, "client", None)
    if client is None or not hasattr(client, "get_server_id"):
        return None
    try:
        server_id = client.get_server_id(timeout=5)
    except Exception:  # noqa: BLE001 - unreachable or reloading: no warm launch
        return None
    if not isinstance(server_id, str):
        return None
    if getattr(client, "socket", None):
        return server_id, True
    host = str(getattr(client, "host", "") or "")
    local = host in {"localhost", "127.0.0.1", "::1", socket.gethostname()}
    return server_id, local
