"""Against real Dango (PyPI getdango 1.0.13): a project made by `dango init`, synced in turn by
Dango's CLI and by dango-dagster's, and both tools' locks contending in real processes.

Runs where getdango is importable (``scripts/test.sh`` runs it in the second environment,
``.venv-dango``); skipped elsewhere. Dango's dbt profile loads the httpfs and parquet extensions,
which it would download; this machine is offline, so the extension files of the installed
``duckdb-extension-*`` packages are laid out in a private HOME's ~/.duckdb first (what a user
with network gets from DuckDB itself). Nothing is mocked.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

pytestmark = [
    pytest.mark.getdango,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("dango") is None,
        reason="getdango is not installed here (scripts/test.sh runs this in .venv-dango)",
    ),
]

BIN = Path(sys.executable).parent
ORDERS_JAN = "order_id,customer,amount\n1,alice,10.5\n2,bob,20\n"
ORDERS_FEB = "order_id,customer,amount\n3,carol,7.25\n4,dave,99.99\n5,erin,1\n"
ORDERS_MAR = "order_id,customer,amount\n6,frank,3.5\n7,grace,4\n8,heidi,5.5\n"
HARNESS = Path(__file__).with_name("lockprocs") / "mixed_holder.py"
# The console script as a user runs it (installed by scripts/test.sh into .venv-dango).
DD = (
    [str(BIN / "dango-dagster")]
    if (BIN / "dango-dagster").exists()
    else [sys.executable, "-m", "dango_dagster.cli"]
)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DANGO_PROJECT_DIR", "DAGSTER_HOME")}
    env.update(
        HOME=str(home),
        DO_NOT_TRACK="1",
        DANGO_ADMIN_PASSWORD="harness-Passw0rd!",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(
            filter(None, [str(Path(__file__).parents[1]), env.get("PYTHONPATH")])
        ),
    )
    return env


def _offline_extensions(home: Path) -> None:
    """Lay the packaged httpfs/parquet extension files out where DuckDB looks for them."""
    folder = home / ".duckdb" / "extensions"
    con = duckdb.connect(config={"extension_directory": str(folder)})
    try:
        for name in ("httpfs", "parquet"):
            spec = importlib.util.find_spec(f"duckdb_extension_{name}")
            if spec is None or not spec.submodule_search_locations:
                pytest.skip(f"duckdb-extension-{name} is not installed (Dango's profile needs it)")
            found = list(Path(spec.submodule_search_locations[0]).rglob("*.duckdb_extension"))
            con.execute(f"INSTALL '{found[0]}'")
    finally:
        con.close()


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, (
        f"{cmd} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """`dango init shop --skip-wizard`, a csv source and a schedule saved through Dango's API."""
    base = tmp_path_factory.mktemp("getdango")
    home = base / "home"
    home.mkdir()
    _offline_extensions(home)
    env = _env(home)
    _run([str(BIN / "dango"), "init", "shop", "--skip-wizard"], base, env)
    root = base / "shop"
    uploads = root / "data" / "uploads" / "orders"
    uploads.mkdir(parents=True, exist_ok=True)
    (uploads / "orders_jan.csv").write_text(ORDERS_JAN)
    (uploads / "orders_feb.csv").write_text(ORDERS_FEB)
    script = f"""
from pathlib import Path
from dango.config.loader import ConfigLoader
from dango.config.models import CSVSourceConfig, DataSource, SourcesConfig
from dango.config.schedules import ScheduleConfig, SchedulesConfig, save_schedules_config
root = Path({str(root)!r})
loader = ConfigLoader(root)
loader.save_sources_config(SourcesConfig(sources=[DataSource(
    name="orders", type="csv", csv=CSVSourceConfig(directory=Path("data/uploads/orders")))]))
save_schedules_config(root, SchedulesConfig(schedules=[ScheduleConfig(
    name="orders_hourly", type="sync", cron="every_hour", sources=["orders"],
    timezone="Asia/Singapore")]))
"""
    _run([sys.executable, "-c", script], root, env)
    return root, env


def _orders(root: Path) -> list[tuple]:
    with duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(
            "SELECT order_id, _dango_filename FROM raw_orders.orders ORDER BY order_id"
        ).fetchall()


def _metadata(root: Path) -> dict[str, tuple]:
    with duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT file_path, status, loaded_at FROM main._dango_file_metadata"
        ).fetchall()
    return {Path(p).name: (s, t) for p, s, t in rows}


def test_dango_and_dagster_take_turns_on_one_project(shop: tuple[Path, dict[str, str]]) -> None:
    root, env = shop
    _run([str(BIN / "dango"), "sync", "orders", "-y"], root, env)
    assert [r[0] for r in _orders(root)] == [1, 2, 3, 4, 5]
    loaded_by_dango = _metadata(root)

    # dango-dagster syncs a new file: exactly its rows are added, in Dango's layout.
    (root / "data" / "uploads" / "orders" / "orders_mar.csv").write_text(ORDERS_MAR)
    out = _run(
        [*DD, "sync", "--project", str(root), "--source", "orders"],
        root,
        env,
    )
    assert "succeeded" in out
    rows = _orders(root)
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert {r[1] for r in rows if r[0] >= 6} == {"orders_mar.csv"}
    meta = _metadata(root)
    assert meta["orders_mar.csv"][0] == "loaded"
    assert {k: meta[k] for k in loaded_by_dango} == loaded_by_dango  # Dango's files untouched
    with duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True) as con:
        staged = con.execute("SELECT count(*) FROM staging.stg_orders__orders").fetchone()
        history = con.execute(
            "SELECT status FROM _dango_meta.sync_history WHERE source_name = 'orders'"
        ).fetchall()
    assert staged == (8,)  # Dango's own staging model, built by dango-dagster's dbt step
    assert ("success",) in history

    # Dango syncs again: nothing is loaded twice, and Dango's UI history keeps our entry.
    _run([str(BIN / "dango"), "sync", "orders", "-y"], root, env)
    assert [r[0] for r in _orders(root)] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert _metadata(root) == meta
    entries = json.loads((root / ".dango" / "history" / "orders.json").read_text())
    assert [e.get("triggered_by") for e in entries].count("dango-dagster") == 1


def test_graph_schedule_and_config_rewrite(shop: tuple[Path, dict[str, str]]) -> None:
    import dagster as dg

    from dango_dagster.config import load_config
    from dango_dagster.defs.builder import build_definitions

    root, env = shop
    if not (root / "dbt" / "models" / "staging" / "stg_orders__orders.sql").exists():
        _run([str(BIN / "dango"), "sync", "orders", "-y"], root, env)  # Dango generates it
    (root / ".dango" / "dango_dagster.yml").write_text("notebooks:\n  users: [ana]\n")
    defs = build_definitions(load_config(root))
    graph = defs.resolve_asset_graph()
    raw = dg.AssetKey(["raw_orders", "orders"])
    assert raw in graph.get(dg.AssetKey(["staging", "stg_orders__orders"])).parent_keys
    schedule = defs.resolve_schedule_def("orders_hourly")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 * * * *", "Asia/Singapore")
    job = defs.resolve_job_def(schedule.job_name)
    assert raw in job.asset_layer.selected_asset_keys

    # Dango rewrites project.yml (as `dango source add` or a rename do) and adds its api keys.
    script = (
        "from pathlib import Path; from dango.config.loader import ConfigLoader\n"
        f"loader = ConfigLoader(Path({str(root)!r})); config = loader.load_config()\n"
        "config.api.mcp_mask_pii = False; config.project.name = 'Shop Renamed'\n"
        "loader.save_config(config)\n"
    )
    _run([sys.executable, "-c", script], root, env)
    assert "mcp_mask_pii: false" in (root / ".dango" / "project.yml").read_text()
    config = load_config(root)
    assert (
        config.notebook_users == ["ana"]
        and config.warehouse_path == root / "data" / "warehouse.duckdb"
    )
    assert build_definitions(config).resolve_schedule_def("orders_hourly")
    out = _run([*DD, "lock", "status", "--project", str(root)], root, env)
    assert "free" in out.lower()


def test_real_dango_waiters_are_never_starved_and_never_lose_their_info(
    tmp_path: Path,
) -> None:
    """Two dango-dagster writers re-queuing back to back, one Dango writer polling every 3 s."""
    root = tmp_path / "p"
    (root / ".dango" / "state").mkdir(parents=True)
    env = _env(tmp_path)
    seconds, hold = 16.0, 0.4
    procs = [
        subprocess.Popen(
            [sys.executable, str(HARNESS), kind, str(root), str(seconds), str(hold), str(pause)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )  # fmt: skip
        for kind, pause in (("ours", 0), ("ours", 0), ("dango", 0.5))
    ]
    holds = []
    for proc in procs:
        out, err = proc.communicate(timeout=seconds + 180)
        assert proc.returncode == 0, err[-3000:]
        holds += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    holds.sort(key=lambda h: h["got"])
    overlaps = [(a, b) for a, b in zip(holds, holds[1:], strict=False) if b["got"] < a["released"]]
    assert overlaps == []
    assert sum(h["lost"] for h in holds) == 0
    dango = [h for h in holds if h["who"] == "dango"]
    assert len(dango) >= 2, holds
    waits = [h["got"] - h["asked"] for h in dango]
    # One Dango poll (3 s) plus the hold of whoever had it, and slack for a loaded machine.
    assert max(waits) <= hold + 3.0 + 1.5, waits


def test_verified_source_comes_from_getdangos_vendored_code(tmp_path: Path) -> None:
    """A verified source type (chess) is built by the dlt code getdango ships (no network: only
    built, its resources listed)."""
    from dango_dagster.config import load_config
    from dango_dagster.defs.ingestion.sources import build_dlt_source

    (tmp_path / ".dango").mkdir()
    (tmp_path / ".dango" / "sources.yml").write_text(
        "sources:\n- name: games\n  type: chess\n  generic_config:\n"
        "    players: [magnuscarlsen]\n    start_month: 2024/01\n    end_month: 2024/01\n"
    )
    config = load_config(tmp_path)
    source = build_dlt_source(config, config.source("games"))
    assert source.name == "games"
    assert "players_games" in source.resources


def test_holder_info_dango_is_writing_is_never_cleaned(tmp_path: Path) -> None:
    """The deterministic case: Dango holds the lock and its info is caught between truncate and
    write (empty). Our acquisition attempts must leave that file alone."""
    root = tmp_path / "p"
    (root / ".dango" / "state").mkdir(parents=True)
    script = (
        "import sys, time; from pathlib import Path; from dango.utils.dbt_lock import DbtLock\n"
        "lock = DbtLock(Path(sys.argv[1]), source='cli', operation='dango sync')\n"
        "lock.acquire(timeout=5); print('HELD', flush=True); time.sleep(30)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(root)], stdout=subprocess.PIPE, text=True,
        env=_env(tmp_path),
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "HELD"
        from dango_dagster.errors import DbtLockTimeout
        from dango_dagster.lock import DbtLock

        info = root / ".dango" / "state" / "dbt.lock.json"
        info.write_text("")  # the moment between Dango's truncate and its write
        for _ in range(5):
            with pytest.raises(DbtLockTimeout):
                DbtLock(root, source="dagster", operation="dlt load").acquire(timeout=0)
            assert info.exists(), "our stale-info cleanup removed info Dango was writing"
        info.write_text(json.dumps({"pid": holder.pid, "source": "cli", "operation": "x"}))
        with pytest.raises(DbtLockTimeout, match=f"PID {holder.pid}"):
            DbtLock(root, source="dagster", operation="dlt load").acquire(timeout=0)
    finally:
        holder.kill()
        holder.wait(timeout=30)
