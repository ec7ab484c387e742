"""Snapshot files on disk: names, listing, placement, retention, and the debris of killed runs.

A notebook snapshot is ``warehouse_{user}_{YYYYMMDD_HHMMSS}.duckdb`` in ``.dango/snapshots/``
(timestamps in UTC, so the order survives daylight-saving changes). A second snapshot within
the same second gets ``_2``, then ``_3``...; ``(timestamp, sequence)`` orders them, and that
order is what retention and "newest" use, never the file's mtime.

Only verified, complete files ever carry such a name. Work in progress lives under a hidden
temporary name that records its owner (PID and process start time), so the next run can tell
the leftovers of a killed run (owner gone) from the file of a run still in progress (owner alive).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dango_dagster.errors import InvalidUsernameError
from dango_dagster.lock.info import LockHolder, holder_is_alive, process_start_time

__all__ = [
    "InvalidUsernameError",
    "SnapshotInfo",
    "apply_retention",
    "clean_stale_temps",
    "fsync_dir",
    "iter_snapshots",
    "next_sequence",
    "place_file",
    "sanitize_username",
    "snapshot_filename",
    "temp_path",
]

TIMESTAMP_FORMAT = "%Y%m%d_%H%M%S"
_MAX_USER_LEN = 64
_BAD_USER_CHARS = re.compile(r"[^a-z0-9_-]+")
# Unambiguous: the tail ``_D8_D6`` or ``_D8_D6_N`` can only be parsed one way (see tests).
_NAME_RE = re.compile(
    r"^warehouse_(?P<user>[a-z0-9_-]+)_(?P<ts>\d{8}_\d{6})(?:_(?P<seq>\d+))?\.duckdb$"
)
_TEMP_RE = re.compile(
    r"^\.tmp-(?P<kind>[a-z]+)-(?P<ts>\d{8}_\d{6})_(?P<seq>\d+)"
    r"-(?P<pid>\d+)-(?P<start>\d+)-[0-9a-f]+\.duckdb$"
)
# A temp file whose owner still runs is left alone unless it has not changed for this long
# (an owner on another host, or a process that hung): a copy in progress updates the mtime.
STALE_TEMP_AGE_S = 3600.0


def sanitize_username(name: str) -> str:
    """A user name safe in a file name: lower case ``[a-z0-9_-]``, at most 64 characters.

    Anything else becomes ``_`` (``DOMAIN\\Bob.Smith`` -> ``domain_bob_smith``), so no name can
    carry a path separator or ``..``; a name with nothing usable left is an error.
    """
    cleaned = _BAD_USER_CHARS.sub("_", str(name).strip().lower()).strip("_-")[:_MAX_USER_LEN]
    cleaned = cleaned.strip("_-")
    if not cleaned:
        raise InvalidUsernameError(
            f"User name {name!r} has no letters or digits to build a snapshot name from; "
            "use letters, digits, '_' or '-'."
        )
    return cleaned


def snapshot_filename(user: str, timestamp: str, seq: int = 1) -> str:
    """``warehouse_{user}_{timestamp}.duckdb``; ``seq`` > 1 adds ``_{seq}``."""
    suffix = f"_{seq}" if seq > 1 else ""
    return f"warehouse_{user}_{timestamp}{suffix}.duckdb"


@dataclass(frozen=True)
class SnapshotInfo:
    """One notebook snapshot file."""

    user: str
    path: Path
    taken_at: dt.datetime  # UTC, from the name (second precision)
    size_bytes: int
    seq: int = 1

    @property
    def sort_key(self) -> tuple[dt.datetime, int]:
        return (self.taken_at, self.seq)

    def as_dict(self) -> dict[str, object]:
        return {
            "user": self.user,
            "path": str(self.path),
            "taken_at": self.taken_at.isoformat(),
            "size_bytes": self.size_bytes,
            "seq": self.seq,
        }


def parse_snapshot_name(name: str) -> tuple[str, str, int] | None:
    """``(user, timestamp, seq)`` of a snapshot file name, or None for any other file."""
    match = _NAME_RE.match(name)
    if match is None:
        return None
    return match["user"], match["ts"], int(match["seq"] or 1)


def iter_snapshots(folder: Path, user: str | None = None) -> Iterator[SnapshotInfo]:
    """The snapshot files in ``folder`` (of ``user`` only, if given), in no particular order.

    A file that disappears while we look (another run's retention) is simply skipped.
    """
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for entry in entries:
        parsed = parse_snapshot_name(entry.name)
        if parsed is None or (user is not None and parsed[0] != user):
            continue
        try:
            taken = dt.datetime.strptime(parsed[1], TIMESTAMP_FORMAT).replace(tzinfo=dt.UTC)
            size = entry.stat().st_size
        except (ValueError, OSError):
            continue
        yield SnapshotInfo(parsed[0], Path(entry.path), taken, size, parsed[2])


def apply_retention(folder: Path, users: Iterable[str], keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` snapshots of each of ``users``; returns the deleted.

    Called only after the new snapshots are in place, with ``keep`` >= 1, so the newest (good)
    snapshot always survives. One scan of the folder serves every user, so the cost per user is
    the unlink alone. Readers that have an old file open keep reading it: unlinking a name
    never takes the data away from an open file.
    """
    wanted = set(users)
    by_user: dict[str, list[SnapshotInfo]] = {}
    for info in iter_snapshots(folder):
        if info.user in wanted:
            by_user.setdefault(info.user, []).append(info)
    deleted: list[Path] = []
    for infos in by_user.values():
        infos.sort(key=lambda s: s.sort_key, reverse=True)
        for info in infos[max(1, keep) :]:
            with contextlib.suppress(FileNotFoundError):
                info.path.unlink()
                deleted.append(info.path)
    return deleted


# --- temporary files -----------------------------------------------------------------------------


_START_MS: dict[int, int] = {}


def _own_start_ms() -> int:
    """This process's start time in ms (cached per PID: a forked child has its own)."""
    pid = os.getpid()
    if pid not in _START_MS:
        _START_MS[pid] = int((process_start_time(pid) or 0.0) * 1000)
    return _START_MS[pid]


def temp_path(folder: Path, kind: str, timestamp: str, seq: int) -> Path:
    """A hidden, unique temporary name in ``folder`` that records its owner and its sequence."""
    token = secrets.token_hex(4)
    name = f".tmp-{kind}-{timestamp}_{seq}-{os.getpid()}-{_own_start_ms()}-{token}.duckdb"
    return folder / name


def _iter_temps(folder: Path) -> Iterator[tuple[os.DirEntry[str], re.Match[str]]]:
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for entry in entries:
        match = _TEMP_RE.match(entry.name)
        if match is not None:
            yield entry, match


def _owner_alive(match: re.Match[str]) -> bool:
    start_ms = int(match["start"])
    holder = LockHolder(
        pid=int(match["pid"]), process_start_time=start_ms / 1000 if start_ms else None
    )
    return holder_is_alive(holder)


def clean_stale_temps(folders: Iterable[Path], *, max_age: float = STALE_TEMP_AGE_S) -> list[Path]:
    """Remove temporary files left by killed runs; returns what was removed.

    A file is debris when its owner process is gone (or its PID now names another process), or
    when it has not been touched for ``max_age`` seconds. A concurrent run's file is never touched.
    """
    removed: list[Path] = []
    now = time.time()
    for folder in folders:
        for entry, match in _iter_temps(folder):
            try:
                age = now - entry.stat().st_mtime
            except FileNotFoundError:
                continue
            if _owner_alive(match) and age < max_age:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def next_sequence(folders: Iterable[Path], timestamp: str) -> int:
    """The sequence number for a new snapshot taken in second ``timestamp``.

    One more than any snapshot or in-progress temporary file of that second, across all users,
    so a run that copies later always sorts later. Called under the warehouse lock, which
    serialises the copies, and the temporary file created next reserves the number.
    """
    highest = 0
    for folder in folders:
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            continue
        for name in names:
            parsed = parse_snapshot_name(name)
            if parsed is not None and parsed[1] == timestamp:
                highest = max(highest, parsed[2])
            match = _TEMP_RE.match(name)
            if match is not None and match["ts"] == timestamp:
                highest = max(highest, int(match["seq"]))
    return highest + 1


# --- final names --------------------------------------------------------------------------------


def fsync_dir(folder: Path) -> None:
    """Make the names just created in ``folder`` durable (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def place_file(source: Path, final: Path, *, replace: bool, tmp: Callable[[], Path]) -> None:
    """Give the verified file ``source`` the name ``final``, all or nothing.

    ``replace=False`` never overwrites (``FileExistsError`` if ``final`` exists); ``replace=True``
    swaps atomically through a temporary name from ``tmp()`` (readers of the old file keep it).
    A hard link costs O(1); only where links are impossible (another file system) is the file
    copied.
    """
    staging = None
    try:
        if not replace:
            os.link(source, final)
            return
        staging = tmp()
        os.link(source, staging)
        os.replace(staging, final)
        return
    except FileExistsError:
        raise
    except OSError:
        if staging is not None:
            with contextlib.suppress(OSError):
                staging.unlink()
        # no hard links here: fall back to a real copy
    staging = tmp()
    try:
        shutil.copyfile(source, staging)
        with open(staging, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(staging, 0o444)
        if not replace and final.exists():
            raise FileExistsError(final)
        os.replace(staging, final)
    finally:
        with contextlib.suppress(OSError):
            staging.unlink()
