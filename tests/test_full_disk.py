"""A full disk in each part a sync writes: a clear message, nothing lost, the next sync heals.

Real full disks: small tmpfs mounts (the test must run as root; it skips, saying why, when it
cannot mount) over the folders a sync writes, each filled to the brim in turn: Dagster's own
storage, the warehouse (dlt load), dbt's target folder (dbt build), the snapshots folder.
Everything else is the real console script on a real project.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from pause_support import start_sync

from dango_dagster.config import load_config
from dango_dagster.demo import init_demo_project
from dango_dagster.sync_status import list_statuses

pytestmark = pytest.mark.slow

MOUNT_MB = 24


def _mount_tmpfs(folder: Path, megabytes: int) -> str | None:
    """Mount a tmpfs of ``megabytes`` on ``folder``; the reason when that is refused."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "mounting a small tmpfs needs root"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    return None if done.returncode == 0 else f"mount refused: {done.stderr.strip()}"


def _fill(folder: Path) -> Path:
    """Fill the file system holding ``folder`` up to a few KB."""
    filler = folder / ".filler"
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    with filler.open("wb") as out:
        chunk = b"\0" * 2**20
        remaining = max(0, free - 8192)
        while remaining > 0:
            try:
                out.write(chunk[: min(len(chunk), remaining)])
                out.flush()
            except OSError:
                break
            remaining -= min(len(chunk), remaining)
    return filler


def _counts(project: Path) -> dict[str, int]:
    config = load_config(project)
    counts = {}
    for name, path in (("live", config.warehouse_path), ("snap", config.published_snapshot_path)):
        with duckdb.connect(str(path), read_only=True) as con:
            for table in ("raw_orders.orders", "marts.fct_orders"):
                counts[f"{name}:{table}"] = con.execute(f"select count(*) from {table}").fetchone()[
                    0
                ]
    return counts


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Path]]]:
    project = init_demo_project(tmp_path / "shop", rows=200)
    config = load_config(project)
    folders = {
        "Dagster storage": config.dagster_home,
        "warehouse": config.warehouse_path.parent,
        "dbt": config.dbt_project_dir / "target",
        "snapshots": config.snapshots_dir,
    }
    mounted: list[Path] = []
    try:
        for folder in folders.values():
            # What demo init put there (the uploads under data/, dbt's manifest) moves onto the
            # mount.
            aside = tmp_path / "aside" / folder.name
            if folder.is_dir():
                shutil.copytree(folder, aside)
            reason = _mount_tmpfs(folder, MOUNT_MB)
            if reason is not None:
                pytest.skip(reason)
            mounted.append(folder)
            if aside.is_dir():
                shutil.copytree(aside, folder, dirs_exist_ok=True)
        yield project, folders
    finally:
        for folder in reversed(mounted):
            subprocess.run(["umount", "-l", str(folder)], check=False)


def test_full_disk_in_each_part_loses_nothing_and_heals(
    shop: tuple[Path, dict[str, Path]],
) -> None:
    project, folders = shop
    first = start_sync(project)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err
    before = _counts(project)

    uploads = project / "data" / "uploads" / "orders"
    for part, folder in folders.items():
        extra = None
        if part == "warehouse":  # new rows, so the load itself must write the full warehouse
            header, *rows = sorted(uploads.glob("*.csv"))[0].read_text().splitlines()
            # Far more than the few KB left: the load's swap cannot commit.
            fresh = [f"{900000 + i},{rows[i % len(rows)].split(',', 1)[1]}" for i in range(20000)]
            extra = uploads / "orders_more.csv"
            extra.write_text("\n".join([header, *fresh]) + "\n")
        filler = _fill(folder)
        proc = start_sync(project)
        out, err = proc.communicate(timeout=300)
        last = err.strip().splitlines()[-2:]
        assert proc.returncode != 0, f"{part}: the sync did not fail\n{out}{err}"
        text = " ".join(last)
        assert "full" in text.lower() or "space" in text.lower(), f"{part}: {err}"
        assert str(folder) in text, f"{part}: the last lines do not name {folder}:\n{err}"
        assert "MB" in text, f"{part}: {err}"
        assert "Traceback" not in err, f"{part}: {err}"
        filler.unlink()
        assert _counts(project) == before, f"{part}: rows lost"
        if extra is not None:
            newest = list_statuses(load_config(project).state_dir)[0]
            assert newest["phase"] == "failed" and "orders" in newest["step"], newest
            extra.unlink()

    healed = start_sync(project)
    out, err = healed.communicate(timeout=300)
    assert healed.returncode == 0, out + err
    assert _counts(project) == before
