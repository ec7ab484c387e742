"""Snapshots: consistent copies, atomic publishing, per-user hard links, names and retention."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import stat
import tempfile
from pathlib import Path

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st
from snapshot_support import make_warehouse, table_rows, write_config

from dango_dagster.config import ProjectConfig, load_config
from dango_dagster.snapshots import (
    InvalidUsernameError,
    SnapshotError,
    WarehouseMissingError,
    list_snapshots,
    newest_snapshot,
    sanitize_username,
    take_snapshot,
)
from dango_dagster.snapshots.files import (
    clean_stale_temps,
    next_sequence,
    parse_snapshot_name,
    snapshot_filename,
    temp_path,
)
from dango_dagster.snapshots.verify import Catalog, verify_copy


@pytest.fixture
def config(project_dir: Path) -> ProjectConfig:
    write_config(project_dir, notebooks={"users": ["alice", "bob"]})
    cfg = load_config(project_dir)
    make_warehouse(cfg.warehouse_path)
    return cfg


def _final_names(cfg: ProjectConfig) -> set[str]:
    return {p.name for p in cfg.snapshots_dir.iterdir() if not p.name.startswith(".")}


def _hidden(cfg: ProjectConfig) -> list[str]:
    folders = (cfg.snapshots_dir, cfg.published_dir)
    return [p.name for f in folders if f.exists() for p in f.iterdir() if p.name.startswith(".")]


def test_snapshot_opens_and_matches_the_warehouse(config: ProjectConfig) -> None:
    result = take_snapshot(config)

    assert set(result.user_paths) == {"alice", "bob"}
    assert result.published_path == config.published_snapshot_path
    assert result.tables == 2
    assert result.table_names == ["marts.fct_daily_sales", "raw_shop.orders"]
    assert result.row_counts == {"marts.fct_daily_sales": 97}
    assert result.size_bytes == config.warehouse_path.stat().st_size
    assert result.taken_at.tzinfo is not None
    for path in [result.published_path, *result.user_paths.values()]:
        assert path.exists()
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
        for table in ("marts.fct_daily_sales", "staging.stg_orders"):
            assert table_rows(path, table) == table_rows(config.warehouse_path, table)
    assert _hidden(config) == []  # no temporary file left behind


def test_each_user_costs_a_hard_link_not_a_copy(config: ProjectConfig) -> None:
    result = take_snapshot(config, users=[f"user{i}" for i in range(8)])

    inodes = {p.stat().st_ino for p in result.user_paths.values()}
    inodes.add(config.published_snapshot_path.stat().st_ino)
    assert len(inodes) == 1
    assert config.published_snapshot_path.stat().st_nlink == 9


def test_published_path_is_replaced_atomically(config: ProjectConfig) -> None:
    take_snapshot(config, users=[])
    published = config.published_snapshot_path
    old_inode = published.stat().st_ino
    reader = duckdb.connect(str(published), read_only=True)
    con = duckdb.connect(str(config.warehouse_path))
    con.execute("insert into marts.fct_daily_sales values (1000, 1.0, 1)")
    con.close()

    take_snapshot(config, users=[])

    # A reader that had the old snapshot open keeps reading it, unchanged ...
    assert reader.execute("select count(*) from marts.fct_daily_sales").fetchone() == (97,)
    reader.close()
    # ... and whoever opens the path now gets the new one.
    assert published.stat().st_ino != old_inode
    assert len(table_rows(published, "marts.fct_daily_sales")) == 98
    assert _hidden(config) == []


def test_retention_keeps_the_newest_three_per_user(config: ProjectConfig) -> None:
    results = [take_snapshot(config, users=["alice", "bob"]) for _ in range(5)]

    for user in ("alice", "bob"):
        kept = [s.path for s in list_snapshots(config, user)]
        newest_three = [r.user_paths[user] for r in reversed(results[-3:])]
        assert kept == newest_three
        assert newest_snapshot(config, user) == results[-1].user_paths[user]
    # Five snapshots, each with a distinct name, even when several fall in the same second.
    assert len({r.user_paths["alice"] for r in results}) == 5
    deleted = {p for r in results for p in r.deleted}
    assert deleted == {r.user_paths[u] for r in results[:2] for u in ("alice", "bob")}


def test_retention_setting_is_honoured(project_dir: Path) -> None:
    write_config(project_dir, snapshots={"retention": 1})
    cfg = load_config(project_dir)
    make_warehouse(cfg.warehouse_path)
    for _ in range(3):
        last = take_snapshot(cfg, users=["carol"])
    assert [s.path for s in list_snapshots(cfg, "carol")] == [last.user_paths["carol"]]


def test_usernames_are_sanitised(config: ProjectConfig) -> None:
    assert sanitize_username("Alice") == "alice"
    assert sanitize_username("CORP\\Bob.Smith") == "corp_bob_smith"
    assert sanitize_username("../../etc/passwd") == "etc_passwd"
    assert sanitize_username("  zoë ") == "zo"
    assert len(sanitize_username("x" * 500)) == 64
    for bad in ("", "...", "///", "__"):
        with pytest.raises(InvalidUsernameError):
            sanitize_username(bad)

    result = take_snapshot(config, users=["../Evil", "evil", "EVIL"], publish=False)
    assert list(result.user_paths) == ["evil"]
    assert result.user_paths["evil"].parent == config.snapshots_dir


def test_same_second_snapshots_get_increasing_suffixes(tmp_path: Path) -> None:
    ts = "20260102_030405"
    for name in (snapshot_filename("alice", ts), snapshot_filename("bob", ts, 2)):
        (tmp_path / name).touch()
    assert next_sequence([tmp_path], ts) == 3
    # A copy still in progress reserves its number too.
    temp_path(tmp_path, "snapshot", ts, 3).touch()
    assert next_sequence([tmp_path], ts) == 4
    assert next_sequence([tmp_path], "20260102_030406") == 1
    assert snapshot_filename("alice", ts, 1) == "warehouse_alice_20260102_030405.duckdb"
    assert snapshot_filename("alice", ts, 2) == "warehouse_alice_20260102_030405_2.duckdb"


@given(
    user=st.text(alphabet="abcz019_-", min_size=1, max_size=30),
    ts=st.datetimes(min_value=dt.datetime(1000, 1, 1)).map(lambda d: d.strftime("%Y%m%d_%H%M%S")),
    seq=st.integers(min_value=1, max_value=10_000),
)
def test_snapshot_names_parse_back_unambiguously(user: str, ts: str, seq: int) -> None:
    try:
        user = sanitize_username(user)
    except InvalidUsernameError:
        return
    assert parse_snapshot_name(snapshot_filename(user, ts, seq)) == (user, ts, seq)


def test_list_snapshots_orders_by_time_then_suffix(config: ProjectConfig) -> None:
    config.snapshots_dir.mkdir(parents=True)
    names = [
        snapshot_filename("alice", "20260101_000000", 2),
        snapshot_filename("alice", "20260101_000000", 10),
        snapshot_filename("alice", "20251231_235959"),
        snapshot_filename("alice", "20260101_000000"),
        snapshot_filename("alice_20260101_000000", "20240101_000000"),  # another user
        "warehouse_alice_latest.duckdb",  # not a snapshot name
    ]
    for name in names:
        (config.snapshots_dir / name).touch()
    got = [s.path.name for s in list_snapshots(config, "alice")]
    assert got == [names[1], names[0], names[3], names[2]]
    assert newest_snapshot(config, "alice") == config.snapshots_dir / names[1]
    assert newest_snapshot(config, "nobody") is None


def test_missing_warehouse_is_a_clear_error(project_dir: Path) -> None:
    cfg = load_config(project_dir)
    with pytest.raises(WarehouseMissingError, match="dango-dagster sync"):
        take_snapshot(cfg, users=["alice"])
    assert not cfg.warehouse_path.exists()  # we never create an empty warehouse
    assert list_snapshots(cfg) == []


def test_leftover_temp_files_of_dead_owners_are_cleaned(config: ProjectConfig) -> None:
    take_snapshot(config)
    folder = config.snapshots_dir
    ours = temp_path(folder, "snapshot", "20260101_000000", 1)  # a live owner: this process
    ours.write_bytes(b"in progress")
    dead_pid = _dead_pid()
    dead = folder / f".tmp-snapshot-20260101_000000_2-{dead_pid}-1000-abcd1234.duckdb"
    dead.write_bytes(b"left by a killed run")
    dead_publish = config.published_dir / f".tmp-publish-20260101_000000_2-{dead_pid}-1-ab.duckdb"
    dead_publish.write_bytes(b"x")

    take_snapshot(config)

    assert ours.exists()  # a concurrent run's file is never touched
    assert not dead.exists() and not dead_publish.exists()
    # ... unless it has sat untouched for longer than the stale age.
    assert clean_stale_temps([folder], max_age=0) == [ours]


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_verification_rejects_a_bad_copy(config: ProjectConfig, tmp_path: Path) -> None:
    """A short copy, a copy that is not a database, a copy that misses the WAL: all refused."""
    from dango_dagster.snapshots.verify import checkpoint_and_catalog

    # Committed rows that live only in the WAL (no checkpoint on shutdown).
    con = duckdb.connect(str(config.warehouse_path))
    con.execute("PRAGMA disable_checkpoint_on_shutdown")
    con.execute("insert into marts.fct_daily_sales values (1000, 1.0, 1)")
    con.close()
    assert Path(f"{config.warehouse_path}.wal").stat().st_size > 0
    without_wal = tmp_path / "without_wal.duckdb"
    shutil.copyfile(config.warehouse_path, without_wal)

    con = duckdb.connect(str(config.warehouse_path))
    catalog = checkpoint_and_catalog(con, config.warehouse_path)
    con.close()
    size = config.warehouse_path.stat().st_size
    good = tmp_path / "good.duckdb"
    shutil.copyfile(config.warehouse_path, good)
    assert verify_copy(good, catalog, size) == {"marts.fct_daily_sales": 98}

    with pytest.raises(SnapshotError, match="does not match"):
        verify_copy(without_wal, catalog, without_wal.stat().st_size)
    short = tmp_path / "short.duckdb"
    short.write_bytes(good.read_bytes()[: size // 2])
    with pytest.raises(SnapshotError, match="bytes"):
        verify_copy(short, catalog, size)
    garbage = tmp_path / "garbage.duckdb"
    garbage.write_bytes(os.urandom(size))
    with pytest.raises(SnapshotError, match="does not open"):
        verify_copy(garbage, catalog, size)
    with pytest.raises(SnapshotError, match="does not match"):
        verify_copy(good, Catalog(catalog.entries[:-1]), size)


def test_publish_only_and_users_only(config: ProjectConfig) -> None:
    only_users = take_snapshot(config, publish=False)
    assert only_users.published_path is None
    assert not config.published_snapshot_path.exists()
    only_published = take_snapshot(config, users=[])
    assert only_published.user_paths == {}
    assert config.published_snapshot_path.exists()
    with pytest.raises(SnapshotError, match="Nothing to do"):
        take_snapshot(config, users=[], publish=False)


def test_result_is_json_ready(config: ProjectConfig) -> None:
    import json

    data = take_snapshot(config).as_dict()
    assert json.loads(json.dumps(data))["user_paths"]["alice"].endswith(".duckdb")
    for key in ("lock_wait_seconds", "lock_held_seconds", "copy_seconds", "verify_seconds"):
        assert data[key] >= 0
    assert os.path.basename(data["published_path"]) == "warehouse.duckdb"


def test_published_folder_on_another_file_system_gets_a_copy(
    config: ProjectConfig, tmp_path: Path
) -> None:
    """Hard links cannot cross file systems: the published file is then copied, all or nothing."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on a different file system")
    elsewhere = Path(tempfile.mkdtemp(dir=shm))
    try:
        config.dango_dir.mkdir(parents=True, exist_ok=True)
        config.published_dir.symlink_to(elsewhere, target_is_directory=True)
        for _ in range(2):
            result = take_snapshot(config, users=["alice"])
        published = config.published_snapshot_path
        assert published.stat().st_dev != result.user_paths["alice"].stat().st_dev
        assert stat.S_IMODE(published.stat().st_mode) == 0o444
        assert table_rows(published, "marts.fct_daily_sales") == table_rows(
            result.user_paths["alice"], "marts.fct_daily_sales"
        )
        assert sorted(p.name for p in elsewhere.iterdir()) == ["warehouse.duckdb"]
    finally:
        shutil.rmtree(elsewhere)
