"""Copy one big file fast: the one physical copy a snapshot makes.

Order of preference: a reflink (``FICLONE``: O(1) on btrfs and XFS), then ``copy_file_range``
(the kernel copies, no user-space buffers), then ``sendfile``, then ``pread``/``pwrite``. Only
"not supported here" errors fall through to the next method; a real failure (``ENOSPC``,
``EFBIG``, ``EIO``) is raised to the caller at once.

The caller fsyncs the copy afterwards, outside the warehouse lock: the lock is held for the copy
into the page cache only, and waiting for the disk delays no writer. (Starting write-back during
the copy with ``sync_file_range`` was measured and dropped: on a busy disk it throttled the copy
and so stretched the time the lock is held; see docs/BENCHMARKS.md.)
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable

from dango_dagster.errors import ShortCopyError

__all__ = ["ShortCopyError", "copy_into"]

FICLONE = 0x40049409  # _IOW(0x94, 9, int)
CHUNK_BYTES = 64 * 1024 * 1024
# errno values meaning "this method does not work for these files", so try the next one.
_UNSUPPORTED = {
    errno.EXDEV,
    errno.ENOSYS,
    errno.EINVAL,
    errno.EOPNOTSUPP,
    errno.ENOTSUP,
    errno.ENOTTY,
    errno.EBADF,
    errno.EPERM,
}


def _reflink(src_fd: int, dst_fd: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    import fcntl

    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return False
        raise
    return True


def _copy_file_range(src_fd: int, dst_fd: int, offset: int, count: int) -> int:
    return os.copy_file_range(src_fd, dst_fd, count, offset, offset)


def _sendfile(src_fd: int, dst_fd: int, offset: int, count: int) -> int:
    os.lseek(dst_fd, offset, os.SEEK_SET)
    return os.sendfile(dst_fd, src_fd, offset, count)


def _pread_pwrite(src_fd: int, dst_fd: int, offset: int, count: int) -> int:
    data = os.pread(src_fd, min(count, 8 * 1024 * 1024), offset)
    written = 0
    while written < len(data):
        written += os.pwrite(dst_fd, data[written:], offset + written)
    return len(data)


_METHODS: list[tuple[str, Callable[[int, int, int, int], int]]] = [
    ("copy_file_range", _copy_file_range),
    ("sendfile", _sendfile),
    ("read_write", _pread_pwrite),
]


def copy_into(src_fd: int, dst_fd: int, size: int) -> str:
    """Copy the first ``size`` bytes of ``src_fd`` into the empty file ``dst_fd``.

    Returns the method used. The copy is not durable until the caller ``fsync``s ``dst_fd``.
    """
    if _reflink(src_fd, dst_fd):
        if os.fstat(dst_fd).st_size < size:
            raise ShortCopyError(f"reflink gave {os.fstat(dst_fd).st_size} bytes")
        os.ftruncate(dst_fd, size)
        return "reflink"
    methods = list(_METHODS)
    offset = 0
    while offset < size:
        name, method = methods[0]
        count = min(CHUNK_BYTES, size - offset)
        try:
            done = method(src_fd, dst_fd, offset, count)
        except OSError as exc:
            if exc.errno in _UNSUPPORTED and len(methods) > 1:
                methods.pop(0)
                continue
            raise
        if done == 0:
            raise ShortCopyError(f"source ended after {offset} of {size} bytes")
        offset += done
    return methods[0][0]
