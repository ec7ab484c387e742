"""Small file-system helpers shared by every part that writes state other processes read."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_json"]


def atomic_write_json(
    path: str | os.PathLike[str],
    data: Mapping[str, Any],
    *,
    mode: int = 0o666,
    durable: bool = True,
) -> None:
    """Write ``data`` as JSON so a reader sees the old file or the new one, never half of one.

    The JSON goes to a temporary file beside ``path`` (same directory, so same file system),
    is flushed to disk, then renamed over ``path`` with ``os.replace``. The temporary name carries
    the PID and thread id so concurrent writers never share one; it is removed if anything fails
    (a full disk must not leave debris behind). ``mode`` (before the umask) applies from the
    moment the file exists: 0o600 keeps a private file private even while it is being written.
    ``durable`` (default) fsyncs before the rename, so a power cut cannot leave an empty file
    under the final name; pass False for state that readers already distrust (the lock's holder
    info), where the fsync only adds latency to every lock handoff.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with open(fd, "w", encoding="utf-8") as fh:
            json.dump(dict(data), fh, indent=2)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
