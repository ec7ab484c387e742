"""API keys through the real CLI: shown once, stored hashed in a 0600 file, listed, revoked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from api_support import ApiServer, create_key, publish_snapshot, run_cli, write_project

from dango_dagster.api.keys import KEY_PREFIX, hash_key
from dango_dagster.config import load_config


def test_create_list_revoke(tmp_path: Path) -> None:
    root = write_project(tmp_path / "project")
    out = run_cli("api", "key", "create", "--project", str(root), "--name", "metabase")
    assert out.returncode == 0, out.stderr
    key = next(w for w in out.stdout.split() if w.startswith(KEY_PREFIX))
    assert len(key) > len(KEY_PREFIX) + 40
    store = load_config(root).api_keys_path
    assert store.stat().st_mode & 0o777 == 0o600
    text = store.read_text()
    assert key not in text and hash_key(key) in text, "only the hash is stored"

    listing = run_cli("api", "key", "list", "--project", str(root))
    assert listing.returncode == 0
    assert "metabase" in listing.stdout and key[:15] in listing.stdout and "never" in listing.stdout
    assert key not in listing.stdout

    dup = run_cli("api", "key", "create", "--project", str(root), "--name", "metabase")
    assert dup.returncode == 3 and "exists" in dup.stderr

    revoked = run_cli("api", "key", "revoke", "--project", str(root), "metabase")
    assert revoked.returncode == 0, revoked.stderr
    assert "metabase" not in run_cli("api", "key", "list", "--project", str(root)).stdout
    entries = json.loads(
        run_cli("api", "key", "list", "--project", str(root), "--all", "--json").stdout
    )
    assert entries[0]["name"] == "metabase" and entries[0]["revoked_at"]
    assert "hash" not in entries[0]
    again = run_cli("api", "key", "revoke", "--project", str(root), "metabase")
    assert again.returncode == 3 and "No active key" in again.stderr


def test_concurrent_creates_lose_nothing(tmp_path: Path) -> None:
    root = write_project(tmp_path / "project")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dango_dagster.cli",
                "api",
                "key",
                "create",
                "--project",
                str(root),
                "--name",
                f"k{i}",
                "--json",
            ],
            stdout=subprocess.PIPE,
        )
        for i in range(4)
    ]
    keys = [json.loads(p.communicate(timeout=120)[0])["key"] for p in procs]
    stored = json.loads(load_config(root).api_keys_path.read_text())["keys"]
    assert sorted(k["name"] for k in stored) == ["k0", "k1", "k2", "k3"]
    assert {k["hash"] for k in stored} == {hash_key(key) for key in keys}


def test_last_used_is_recorded(tmp_path: Path) -> None:
    root = write_project(tmp_path / "project")
    publish_snapshot(root)
    key = create_key(root, "scripts")
    create_key(root, "idle")
    server = ApiServer(root)
    try:
        assert server.query("select 1", key).status_code == 200
    finally:
        server.stop()  # graceful shutdown flushes pending "last used" times
    entries = {
        e["name"]: e
        for e in json.loads(run_cli("api", "key", "list", "--project", str(root), "--json").stdout)
    }
    assert entries["scripts"]["last_used_at"] is not None
    assert entries["idle"]["last_used_at"] is None
