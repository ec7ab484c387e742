"""Consistent, point-in-time copies of the warehouse for every reader, with no Dagster in it.

``take`` makes one (under the lock, after CHECKPOINT, copied to a temporary name, verified, renamed
into place), ``files`` names and retains them, ``verify`` opens and checks a copy, ``copy`` does
the fast file copy.
"""

from dango_dagster.snapshots.take import (
    InvalidUsernameError,
    SnapshotError,
    SnapshotInfo,
    SnapshotResult,
    WarehouseMissingError,
    list_snapshots,
    newest_snapshot,
    sanitize_username,
    snapshot_lock,
    take_snapshot,
)

__all__ = [
    "InvalidUsernameError",
    "SnapshotError",
    "SnapshotInfo",
    "SnapshotResult",
    "WarehouseMissingError",
    "list_snapshots",
    "newest_snapshot",
    "sanitize_username",
    "snapshot_lock",
    "take_snapshot",
]
