"""Snapshots against real processes: a concurrent writer, a full disk, kill -9, rogue readers."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from snapshot_support import (
    call,
    check_ledger,
    child,
    make_big_warehouse,
    make_warehouse,
    setup_ledger,
    wait_for,
    write_config,
)

from dango_dagster.config import ProjectConfig, load_config
from dango_dagster.snapshots import SnapshotError, list_snapshots, snapshot_lock, take_snapshot


def _files(cfg: ProjectConfig) -> dict[str, tuple[int, int]]:
    """Every file under the snapshot folders: name -> (inode, size)."""
    out = {}
    for folder in (cfg.snapshots_dir, cfg.published_dir):
        for p in folder.iterdir():
            st = p.stat()
            out[f"{folder.name}/{p.name}"] = (st.st_ino, st.st_size)
    return out


def test_snapshots_are_never_torn_while_a_writer_loops(project_dir: Path, python_exe: str) -> None:
    """Every snapshot opens, holds a committed state, and is exactly the state at lock time."""
    write_config(project_dir, notebooks={"users": ["alice"]}, snapshots={"retention": 50})
    cfg = load_config(project_dir)
    setup_ledger(cfg.warehouse_path)
    stop, progress, report = (project_dir / n for n in ("stop", "progress", "reader.yml"))
    writer = call(python_exe, "writer_loop", str(project_dir), str(stop), str(progress))
    reader = call(
        python_exe, "reader_loop", str(cfg.published_snapshot_path), str(stop), str(report)
    )
    expected: list[int] = []

    @contextlib.contextmanager
    def lock_and_note_progress() -> Iterator[None]:
        # While we hold the lock the writer cannot commit: its last committed batch is exact.
        with snapshot_lock(cfg, timeout=60, source="test"):
            expected.append(int(progress.read_text()) if progress.exists() else 0)
            yield

    try:
        wait_for(progress, proc=writer)
        results = []
        for _ in range(12):
            results.append(take_snapshot(cfg, lock=lock_and_note_progress()))
            time.sleep(0.03)
    finally:
        stop.touch()
        writer_out = writer.communicate(timeout=60)
        reader.communicate(timeout=60)
    assert writer.returncode == 0, writer_out

    for want, result in zip(expected, results, strict=True):
        assert check_ledger(result.user_paths["alice"]) == want
    assert expected[-1] > expected[0] > 0  # the writer really wrote between snapshots
    seen = yaml.safe_load(report.read_text())
    assert seen["errors"] == []
    assert seen["opens"] > 0


def test_full_disk_leaves_previous_snapshots_untouched(project_dir: Path, python_exe: str) -> None:
    """A real EFBIG mid-copy (file size limit in a child): no final-named file, nothing lost."""
    write_config(project_dir, notebooks={"users": ["alice"]})
    cfg = load_config(project_dir)
    make_warehouse(cfg.warehouse_path, rows=200_000)
    take_snapshot(cfg)
    take_snapshot(cfg)
    before = _files(cfg)
    limit = cfg.warehouse_path.stat().st_size // 2
    code = f"""
import resource, signal, sys
from dango_dagster.config import load_config
from dango_dagster.snapshots import SnapshotError, take_snapshot
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
try:
    take_snapshot(load_config({str(project_dir)!r}))
except SnapshotError as exc:
    print(exc)
    sys.exit(7)
"""
    proc = child(python_exe, code)
    out, err = proc.communicate(timeout=120)

    assert proc.returncode == 7, (out, err)
    assert "File too large" in out and "untouched" in out
    assert _files(cfg) == before
    assert len(list_snapshots(cfg, "alice")) == 2
    # The lock was released: the next snapshot works.
    assert take_snapshot(cfg).user_paths["alice"].exists()


def test_kill_9_mid_copy_leaves_no_final_file_and_is_cleaned_up(
    project_dir: Path, python_exe: str
) -> None:
    write_config(project_dir, notebooks={"users": ["alice"]})
    cfg = load_config(project_dir)
    make_big_warehouse(cfg.warehouse_path, rows=4_000_000)
    first = take_snapshot(cfg)
    before = _files(cfg)
    full = cfg.warehouse_path.stat().st_size

    code = "from dango_dagster.config import load_config; from dango_dagster.snapshots import "
    code += f"take_snapshot; take_snapshot(load_config({str(project_dir)!r}))"
    proc = child(python_exe, code)
    temp = None
    deadline = time.monotonic() + 60
    while temp is None and time.monotonic() < deadline and proc.poll() is None:
        temp = next((p for p in cfg.snapshots_dir.glob(".tmp-snapshot-*")), None)
    assert temp is not None, proc.communicate()
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    left = temp.stat().st_size

    after = _files(cfg)
    new_names = set(after) - set(before)
    assert new_names == {f"snapshots/{temp.name}"}, new_names  # only the hidden temp file
    assert {k: v for k, v in after.items() if k in before} == before
    assert left <= full

    # The kernel freed the lock; the next run removes the debris and succeeds.
    second = take_snapshot(cfg)
    assert not temp.exists()
    assert second.user_paths["alice"] != first.user_paths["alice"]
    assert [s.path for s in list_snapshots(cfg, "alice")] == [
        second.user_paths["alice"],
        first.user_paths["alice"],
    ]


def test_a_process_holding_the_live_file_open_is_reported(
    project_dir: Path, python_exe: str
) -> None:
    cfg = load_config(project_dir)
    make_warehouse(cfg.warehouse_path)
    ready, release = project_dir / "ready", project_dir / "release"
    rogue = call(python_exe, "hold_live_open", str(cfg.warehouse_path), str(ready), str(release))
    try:
        wait_for(ready, proc=rogue)
        with pytest.raises(SnapshotError, match="without holding the warehouse lock"):
            take_snapshot(cfg, users=["alice"])
    finally:
        release.touch()
        rogue.communicate(timeout=30)
    assert list_snapshots(cfg) == []
    assert not cfg.published_snapshot_path.exists()
