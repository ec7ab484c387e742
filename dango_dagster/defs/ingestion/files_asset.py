"""The ingestion asset of a csv / local_files source: Dango's file loader under the gate.

One asset ``raw_<src>/<src>`` (Dango's one table per file source). Files are parsed outside the
warehouse lock; the gate holds the lock only for the swap into the live table and the sync
history row (``dango_files.py``). A bad file fails the step with the file, line and column
named, and the live table unchanged.
"""

import datetime as dt
from typing import Any

import dagster as dg

from dango_dagster.config import ProjectConfig
from dango_dagster.constants import (
    META_COLUMN_SCHEMA,
    META_ROW_COUNT,
    META_ROWS_LOADED,
    META_TABLE_NAME,
    ProjectNames,
)
from dango_dagster.dango_project import DangoSource
from dango_dagster.defs.gate import WarehouseLockGate, warehouse_op_tags
from dango_dagster.defs.ingestion import sync_history
from dango_dagster.defs.ingestion.dango_files import (
    FilesLoadError,
    FilesLoadResult,
    load_files_source,
)
from dango_dagster.defs.ingestion.keys import raw_asset_key, source_asset_key


def _metadata(result: FilesLoadResult) -> dict[str, Any]:
    columns = [dg.TableColumn(name=n, type=t) for n, t in result.columns]
    lock = result.hold.metadata() if hasattr(result.hold, "metadata") else {}
    return {
        **lock,
        META_TABLE_NAME: dg.MetadataValue.text(result.table),
        META_ROW_COUNT: dg.MetadataValue.int(result.total_rows),
        META_COLUMN_SCHEMA: dg.MetadataValue.table_schema(dg.TableSchema(columns=columns)),
        META_ROWS_LOADED: dg.MetadataValue.int(result.rows_added),
        "rows_removed": dg.MetadataValue.int(result.rows_removed),
        "files_new": dg.MetadataValue.int(len(result.new)),
        "files_updated": dg.MetadataValue.int(len(result.updated)),
        "files_deleted": dg.MetadataValue.int(len(result.deleted)),
        "files_unchanged": dg.MetadataValue.int(result.skipped),
        "files_parsed_under_lock": dg.MetadataValue.int(result.staged_under_lock),
    }


def run_files_sync(
    context: dg.AssetExecutionContext,
    gate: WarehouseLockGate,
    source_name: str,
    config: ProjectConfig | None = None,
) -> dg.MaterializeResult:
    config = config or gate.project_config()
    source = config.source(source_name)
    started = dt.datetime.now(dt.UTC)

    def hold() -> Any:
        return gate.hold(context, operation=f"load files {source.name}", phase="data_load")

    def on_locked(con: Any, result: FilesLoadResult) -> None:
        status = "success" if result.status == "success" else "failed"
        sync_history.record(
            config,
            source.name,
            started,
            status,
            result.rows_added,
            result.error,
            context.run.run_id,
            con=con,
            total_row_count=result.total_rows,
        )

    try:
        busy = gate.queue_reporter(
            context, f"load files {source.name}", f"another run's load of source {source.name!r}"
        )
        result = load_files_source(config, source, hold, on_locked=on_locked, on_busy=busy)
    except FilesLoadError as exc:
        sync_history.record(config, source.name, started, "failed", 0, str(exc), context.run.run_id)
        raise dg.Failure(description=str(exc)) from exc
    if result.status != "success":
        raise dg.Failure(
            description=result.error or "sync failed",
            metadata={"error_type": dg.MetadataValue.text(result.error_type or "")},
        )
    context.log.info(
        f"{result.table}: {len(result.new)} new, {len(result.updated)} updated, "
        f"{len(result.deleted)} deleted, {result.skipped} unchanged file(s); "
        f"+{result.rows_added} / -{result.rows_removed} rows, {result.total_rows} in total."
    )
    return dg.MaterializeResult(
        asset_key=context.asset_key,
        metadata=_metadata(result),
    )


def build_files_asset(
    config: ProjectConfig, source: DangoSource, names: ProjectNames | None = None
) -> dg.AssetsDefinition:
    table = source.name
    names = names or ProjectNames()
    gate_key = names.gate_resource

    @dg.asset(
        key=raw_asset_key(source, table, names),
        deps=[source_asset_key(source, table, names)],
        group_name=names.group(source.schema_name),
        required_resource_keys={gate_key},
        kinds={"csv" if source.type == "csv" else "files", "duckdb"},
        op_tags=warehouse_op_tags(config),
        description=(
            f"Table {source.schema_name}.{table}: the files of source {source.name!r} "
            f"({config.source_dir(source) / source.file_pattern}), loaded incrementally by file "
            "exactly as Dango's loader does (new, changed and removed files)."
        ),
    )
    def _files(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        gate: WarehouseLockGate = getattr(context.resources, gate_key)
        return run_files_sync(context, gate, source.name, config)

    return _files
