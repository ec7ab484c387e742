"""Transformation assets: the dbt project as Dagster assets, dbt tests as asset checks.

dbt models are keyed ``[schema, model]`` (``staging/stg_orders``, ``marts/fct_daily_sales``) and
dbt sources ``[schema, identifier]`` of the table they point at, which is exactly the key of the
ingestion asset that loads that table (``raw_orders/orders``) whatever the dbt source is called:
lineage is one graph with no placeholders.
The whole ``dbt build`` holds the warehouse lock, since dbt writes from its first model to its last.
"""

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from packaging import version

from dango_dagster.config import ProjectConfig
from dango_dagster.constants import (
    META_COLUMN_SCHEMA,
    META_MATERIALIZED_AS,
    META_ROW_COUNT,
    ProjectNames,
)
from dango_dagster.defs.dbt import _compat as dbt_compat
from dango_dagster.defs.dbt.inprocess import IN_PROCESS_COMMANDS, in_process_cli, run_dbt
from dango_dagster.defs.gate import WarehouseLockGate, warehouse_op_tags
from dango_dagster.lock.primitives import file_mutex
from dango_dagster.snapshots.verify import table_names

WAREHOUSE_ENV_VAR = "DANGO_WAREHOUSE_PATH"
_SKIP_DIRS = {"target", "logs", "dbt_packages", ".venv", "__pycache__"}


def dbt_executable() -> str:
    """The dbt of this environment, absolute: the venv is often not on PATH (``.venv/bin/...``)."""
    bindir = Path(sys.executable).parent
    for name in ("dbt", "dbt.exe"):
        if (bindir / name).exists():
            return str(bindir / name)
    return "dbt"


def _dbt_vars(config: ProjectConfig) -> dict[str, str]:
    warehouse = str(config.warehouse_path)
    env = {WAREHOUSE_ENV_VAR: warehouse, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    if config.settings.warehouse.kind == "ducklake":  # the profile's `ducklake` target reads these
        from dango_dagster.lake import lake_for

        env |= lake_for(config).dbt_env()
    return env


def dbt_env(config: ProjectConfig) -> dict[str, str]:
    """Environment for any dbt process: the warehouse path comes from the project config."""
    return {**os.environ, **_dbt_vars(config)}


def newest_dbt_source_mtime(project_dir: Path) -> float:
    """The newest mtime of the dbt project's sources and folders: the manifest is stale when it is
    older (also what tells a pre-started run worker its definitions are out of date)."""
    newest = 0.0
    for dirpath, dirnames, filenames in os.walk(project_dir):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        if dirpath != str(project_dir):  # a folder's mtime moves when a file in it is deleted
            with contextlib.suppress(OSError):
                newest = max(newest, os.stat(dirpath).st_mtime)
        for name in filenames:
            if name.endswith((".sql", ".yml", ".yaml", ".csv", ".md", ".py")):
                with contextlib.suppress(OSError):
                    newest = max(newest, os.stat(os.path.join(dirpath, name)).st_mtime)
    return newest


def ensure_manifest(config: ProjectConfig) -> Path:
    """``target/manifest.json``, re-parsed only when a file of the dbt project is newer.

    Every entry point (``dagster dev``, ``dagster asset materialize``, a run worker, pytest) loads
    the definitions, so this must be cheap when nothing changed (an mtime walk, ~1 ms) and safe when
    two processes load at once (a file lock serialises ``dbt parse``). ``dbt parse`` does not open
    the warehouse, so it needs no warehouse lock.
    """
    project_dir = config.dbt_project_dir
    if not (project_dir / "dbt_project.yml").exists():
        raise FileNotFoundError(
            f"No dbt project at {project_dir} (dbt_project.yml missing). Set dbt.project_dir in "
            f"{config.config_path}, or create a demo project with `dango-dagster demo init DIR`."
        )
    manifest = project_dir / "target" / "manifest.json"

    def fresh() -> bool:
        newest = newest_dbt_source_mtime(project_dir)
        return manifest.exists() and manifest.stat().st_mtime >= newest

    if fresh():
        return manifest
    config.state_dir.mkdir(parents=True, exist_ok=True)
    with file_mutex(config.state_dir / "dbt_parse.lock"):
        if fresh():  # another process parsed while we waited
            return manifest
        args = ["parse", "--project-dir", str(project_dir), "--profiles-dir", str(project_dir)]
        args += ["--target", config.dbt_target]
        # In process: no second Python importing dbt again (~3 s).
        if config.settings.dbt.in_process and dbt_compat.supported():
            code, errors = run_dbt(args, cwd=project_dir, env=_dbt_vars(config))
            output = "\n".join(errors)
        else:
            proc = subprocess.run(
                [dbt_executable(), *args, "--quiet"],
                cwd=project_dir,
                env=dbt_env(config),
                capture_output=True,
                text=True,
                check=False,
            )
            code, output = proc.returncode, proc.stdout[-4000:] + proc.stderr[-4000:]
    if code != 0 or not manifest.exists():
        raise RuntimeError(
            f"`dbt parse` of {project_dir} failed (exit {code}); fix the dbt project "
            f"and reload the definitions.\n{output[-8000:]}"
        )
    return manifest


class DangoDbtTranslator(DagsterDbtTranslator):
    """Keys models by ``[schema, name]`` and groups them by schema (``staging``, ``marts``).

    ``auto_dbt`` is Dango's ``platform.auto_dbt``: when false, models do not follow fresh raw
    data by themselves (no automation condition); schedules and manual runs still build them.
    With a key prefix, every key (dbt sources too, so they still meet the ingestion assets' keys)
    and group carries it.
    """

    def __init__(self, auto_dbt: bool = True, names: ProjectNames | None = None) -> None:
        super().__init__()
        self.auto_dbt = auto_dbt
        self.names = names or ProjectNames()

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        kind = dbt_resource_props["resource_type"]
        if kind in ("model", "seed", "snapshot"):
            schema = dbt_resource_props.get("schema") or "main"
            return dg.AssetKey(self.names.key_path(schema, dbt_resource_props["name"]))
        if kind == "source":
            # The table the source points at, whatever the dbt source is called: Dango names
            # them after the source (source('orders', 'orders') on raw_orders.orders), the demo
            # after the schema. [schema, table] is the ingestion asset's key: one lineage graph.
            schema = dbt_resource_props.get("schema") or dbt_resource_props["source_name"]
            table = dbt_resource_props.get("identifier") or dbt_resource_props["name"]
            return dg.AssetKey(self.names.key_path(schema, table))
        key = super().get_asset_key(dbt_resource_props)
        return dg.AssetKey(self.names.key_path(*key.path))

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if dbt_resource_props["resource_type"] in ("model", "seed", "snapshot"):
            return self.names.group(dbt_resource_props.get("schema") or "dbt")
        group = super().get_group_name(dbt_resource_props)
        return self.names.group(group) if group else None

    def get_automation_condition(
        self, dbt_resource_props: Mapping[str, Any]
    ) -> dg.AutomationCondition | None:
        # Models follow fresh upstream data without a human (declarative automation).
        return dg.AutomationCondition.eager() if self.auto_dbt else None


class DangoDbtCliResource(DbtCliResource):
    """``DbtCliResource`` without the ``dbt --version`` subprocess (~2.5 s) before every command.

    The dbt executable is this environment's own, so its version is the installed dbt-core's.
    With ``in_process`` (the ``dbt.in_process`` setting), dbt runs inside this process instead of
    a subprocess (see ``dbt_inprocess``); the Dagster events are the same either way.
    """

    in_process: bool = False

    def cli(self, args: Sequence[str], **kwargs: Any) -> Any:
        if self.in_process and args and args[0] in IN_PROCESS_COMMANDS and dbt_compat.supported():
            return in_process_cli(self, args, **kwargs)
        return super().cli(args, **kwargs)

    # The two overrides below replace private dagster-dbt methods; they apply only where
    # ``_compat`` confirms the dagster-dbt they were written for, else dagster-dbt's own run.
    @cached_property
    def _cli_version(self) -> version.Version:
        same_env = Path(self.dbt_executable).parent == Path(sys.executable).parent
        if same_env and dbt_compat.supported():
            known = dbt_compat.dagster_dbt_internals().DBT_PYTHON_VERSION
            if known is not None:
                return known
        return super()._cli_version

    def _initialize_dbt_core_adapter(self, args: Any) -> Any:
        # dagster-dbt builds an in-process dbt adapter (importing dbt's adapter stack and parsing
        # every macro, seconds on 2 cores) only to fetch row counts and column metadata, which we
        # read straight from DuckDB under the lock instead.
        if dbt_compat.supported():
            return None
        return super()._initialize_dbt_core_adapter(args)


def build_dbt_resource(config: ProjectConfig) -> DangoDbtCliResource:
    return DangoDbtCliResource(
        project_dir=str(config.dbt_project_dir),
        profiles_dir=str(config.dbt_project_dir),
        target=config.dbt_target,
        dbt_executable=dbt_executable(),
        in_process=config.settings.dbt.in_process,
    )


def _model_metadata(
    config: ProjectConfig,
    key: dg.AssetKey,
    documented: dg.TableSchema | None,
    *,
    during: bool,
    names: ProjectNames | None = None,
) -> dict[str, Any]:
    """Row count (tables) and column types (tables and views) of a model dbt just built.

    Every column the warehouse has, typed by its catalog, with the descriptions the dbt project
    documents (``documented``, dagster-dbt's column schema from the manifest).

    Read under the warehouse lock. ``during`` the build (dbt in process, a file warehouse), a
    read-write ``connect`` joins the database dbt-duckdb has open in this process (a read-only
    one would be refused as a second configuration of the same file); after it, a read-only one.
    """
    import duckdb

    from dango_dagster.lake import connect_warehouse
    from dango_dagster.snapshots.verify import quote_ident

    path = (names or ProjectNames()).unprefixed(key.path)
    if len(path) != 2:
        return {}
    schema, name = path
    meta: dict[str, Any] = {}
    try:
        with connect_warehouse(config, read_only=not during) as con:
            columns = con.execute(
                "select column_name, data_type, is_nullable from duckdb_columns() "
                "where database_name = current_database() and schema_name = ? "
                "and table_name = ? order by column_index",
                [schema, name],
            ).fetchall()
            if (schema, name) in table_names(con):
                sql = f"select count(*) from {quote_ident(schema)}.{quote_ident(name)}"
                meta[META_ROW_COUNT] = dg.MetadataValue.int(
                    (con.execute(sql).fetchone() or (0,))[0]
                )
                meta[META_MATERIALIZED_AS] = dg.MetadataValue.text("table")
            elif columns:
                meta[META_MATERIALIZED_AS] = dg.MetadataValue.text("view")
    except duckdb.Error:
        return {}
    described = {c.name: c.description for c in documented.columns} if documented else {}
    if columns:
        meta[META_COLUMN_SCHEMA] = dg.MetadataValue.table_schema(
            dg.TableSchema(
                columns=[
                    dg.TableColumn(
                        name=col,
                        type=str(dtype),
                        description=described.get(col),
                        constraints=dg.TableColumnConstraints(nullable=bool(nullable)),
                    )
                    for col, dtype, nullable in columns
                ]
            )
        )
    return meta


# No manifest.json / run_results.json per build: nothing reads them (the events come from dbt's
# log lines, the definitions from the project's own parsed manifest), and writing the manifest
# cost dbt ~1 s of a build on 2 cores, before its first model.
BUILD_ARGS = ["build", "--no-write-json"]


# dagster-dbt gives every invocation its own target folder (``target/<op>-<run>-<id>``) and never
# removes them: a sensor-driven project would fill its disk with manifests. Keep the newest few
# for debugging.
KEEP_INVOCATION_TARGETS = 2


def prune_invocation_targets(project_dir: Path, op_name: str, keep: int = KEEP_INVOCATION_TARGETS):
    """Delete all but the newest ``keep`` per-invocation target folders of ``op_name``."""
    folders = sorted(
        (p for p in (project_dir / "target").glob(f"{op_name}-*") if p.is_dir()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in folders[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def build_dbt_assets(
    config: ProjectConfig, names: ProjectNames | None = None
) -> dg.AssetsDefinition:
    """``@dbt_assets`` over the project's dbt project, every model writing under the gate."""
    names = names or ProjectNames()
    gate_key, dbt_key = names.gate_resource, names.dbt_resource
    manifest = ensure_manifest(config)
    project = DbtProject(
        project_dir=config.dbt_project_dir,
        profiles_dir=config.dbt_project_dir,
        target=config.dbt_target,
    )

    @dbt_assets(
        manifest=manifest,
        project=project,
        dagster_dbt_translator=DangoDbtTranslator(config.platform.auto_dbt, names),
        name=names.name("dbt_models"),
        required_resource_keys={gate_key, dbt_key},
        op_tags=warehouse_op_tags(config),
    )
    def dbt_models(context: dg.AssetExecutionContext) -> Iterator[Any]:
        dbt: DangoDbtCliResource = getattr(context.resources, dbt_key)
        warehouse_gate: WarehouseLockGate = getattr(context.resources, gate_key)
        cfg = config
        os.environ.update(_dbt_vars(cfg))
        started = time.monotonic()
        # Each event is yielded as dbt reports it, so the UI shows models materializing and
        # checks passing during the build, and a build killed half-way leaves the finished
        # models recorded. The lock is held from the first model to the last, no longer.
        # A dbt subprocess keeps the warehouse file to itself until it exits (and a DuckLake is
        # attached by dbt on its own), so there the events wait for the end of the build to
        # carry row counts and column types.
        live = dbt.in_process and cfg.settings.warehouse.kind == "file"

        def enrich(event: Any) -> Any:
            if not isinstance(event, dg.Output):
                return event
            key = context.asset_key_for_output(event.output_name)
            documented = context.assets_def.metadata_by_key[key].get(META_COLUMN_SCHEMA)
            extra = {
                **session.metadata(),
                **_model_metadata(
                    cfg, key, getattr(documented, "schema", documented), during=live, names=names
                ),
            }
            return event.with_metadata({**event.metadata, **extra})

        held: list[Any] = []
        error: Exception | None = None
        with warehouse_gate.hold(context, operation="dbt build", phase="dbt") as session:
            try:
                for event in dbt.cli(BUILD_ARGS, context=context).stream():
                    if live:
                        yield enrich(event)
                    else:
                        held.append(event)
            except Exception as exc:
                if live:
                    raise
                error = exc  # raised below, once the models dbt finished are recorded
            finally:
                prune_invocation_targets(cfg.dbt_project_dir, context.op_execution_context.op.name)
            held = [enrich(event) for event in held]  # dbt is done: the file can be read
        yield from held
        if error is not None:
            raise error
        context.log.info(
            f"dbt build took {time.monotonic() - started:.1f} s "
            f"(lock wait {session.wait_seconds:.2f} s, held {session.held_seconds:.2f} s)"
        )

    return dbt_models
