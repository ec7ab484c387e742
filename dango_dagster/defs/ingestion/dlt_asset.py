"""dlt sources (every type but csv / local_files) as Dagster assets, one per dlt resource.

Imported only when a project has such a source: dlt and dagster-dlt cost about a second of
imports in every process that loads the definitions (the code server, each run's worker, a sync),
which a project of csv uploads never needs. dlt's extract and normalize run outside the gate,
only ``pipeline.load()`` (the step that opens the DuckDB file) inside it.
"""

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import dagster as dg
import duckdb
from dagster_dlt import DagsterDltTranslator, build_dlt_asset_specs
from dagster_dlt.translator import DltResourceTranslatorData

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
from dango_dagster.defs.ingestion.assets import source_location
from dango_dagster.defs.ingestion.keys import raw_asset_key, source_asset_key
from dango_dagster.defs.ingestion.sources import build_dlt_source, build_pipeline
from dango_dagster.lake.catalog import connect_warehouse
from dango_dagster.lock.primitives import file_mutex


class DangoDltTranslator(DagsterDltTranslator):
    def __init__(
        self, config: ProjectConfig, source: DangoSource, names: ProjectNames | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.source = source
        self.names = names or ProjectNames()

    def get_asset_spec(self, data: DltResourceTranslatorData) -> dg.AssetSpec:
        spec = super().get_asset_spec(data)
        table = data.resource.name
        return spec.replace_attributes(
            key=raw_asset_key(self.source, table, self.names),
            deps=[source_asset_key(self.source, table, self.names)],
            group_name=self.names.group(self.source.schema_name),
            description=(
                f"Table {self.source.schema_name}.{table} of the warehouse, loaded by dlt from "
                f"source {self.source.name!r} ({self.source.type})."
            ),
            kinds={"dlt", "duckdb"},
            automation_condition=None,
        )


def _table_metadata(pipeline: Any, table: str, rows: int | None) -> dict[str, Any]:
    schema = pipeline.default_schema
    columns: list[dg.TableColumn] = []
    try:
        for col in schema.get_table_columns(table).values():
            columns.append(
                dg.TableColumn(
                    name=col["name"],
                    type=str(col.get("data_type", "unknown")),
                    constraints=dg.TableColumnConstraints(nullable=bool(col.get("nullable", True))),
                )
            )
    except KeyError:
        pass
    meta: dict[str, Any] = {
        META_COLUMN_SCHEMA: dg.MetadataValue.table_schema(dg.TableSchema(columns=columns)),
        META_TABLE_NAME: dg.MetadataValue.text(f"{pipeline.dataset_name}.{table}"),
    }
    if rows is not None:
        meta[META_ROW_COUNT] = dg.MetadataValue.int(rows)
    return meta


def _empty_replace_block(
    config: ProjectConfig,
    source: DangoSource,
    dlt_source: Any,
    tables: set[str],
    row_counts: dict[str, int],
) -> str | None:
    """Dango's empty-replace protection for dlt sources: a ``replace`` resource that extracted no
    rows would empty a table that has rows. Unless ``empty_sync_policy: allow``, the sync is
    refused and nothing is loaded (called under the lock, before the load)."""
    if source.empty_sync_policy == "allow":
        return None
    empty = [
        t
        for t in sorted(tables)
        if row_counts.get(t, 0) == 0
        and getattr(dlt_source.resources[t], "write_disposition", None) == "replace"
    ]
    if not empty:
        return None
    kept: dict[str, int] = {}
    with contextlib.closing(connect_warehouse(config, read_only=False)) as con:
        for table in empty:
            try:
                row = con.execute(
                    f'SELECT count(*) FROM "{source.schema_name}"."{table}"'
                ).fetchone()
            except duckdb.Error:
                continue  # no table yet: nothing to protect
            if row and row[0]:
                kept[table] = int(row[0])
    if not kept:
        return None
    what = ", ".join(f"{source.schema_name}.{t} ({n:,} rows)" for t, n in kept.items())
    return (
        f"Source {source.name!r} returned no rows for {what}; replacing would empty it, so "
        "nothing was loaded and the existing rows are preserved. If the source really is empty "
        f"now, set `empty_sync_policy: allow` for source {source.name!r} in .dango/sources.yml "
        f"(Dango: dango sync {source.name} --allow-empty-replace)."
    )


def run_ingestion(
    context: dg.AssetExecutionContext,
    gate: WarehouseLockGate,
    source_name: str,
    config: ProjectConfig | None = None,
) -> Iterator[dg.MaterializeResult]:
    """Extract and normalize outside the lock, load under it, report one result per table.

    ``config``: the settings the definitions were built from (default: the gate's).
    """
    config = config or gate.project_config()
    source = config.source(source_name)
    keys = {key.path[-1]: key for key in context.selected_asset_keys}
    selected = set(keys)
    started_at = dt.datetime.now(dt.UTC)
    try:
        # Built fresh for each run, so what changed since the definitions loaded is picked up.
        dlt_source = build_dlt_source(config, source)
        missing = selected - set(dlt_source.resources.keys())
        if missing:
            raise dg.Failure(
                description=(
                    f"Source {source.name!r} has no table(s) {', '.join(sorted(missing))} any "
                    f"more ({source_location(config, source)}). Reload the definitions so the "
                    "asset list matches the source."
                )
            )
        dlt_source = dlt_source.with_resources(*sorted(selected))
        pipeline = build_pipeline(config, source)
        started = time.monotonic()
        # One ingestion of a source at a time: its dlt working folder is shared, and extract
        # runs outside the warehouse lock.
        with file_mutex(config.own_state_dir / f"dlt_{source.name}.lock"):
            # A crashed earlier run must not replay its packages (dlt < 1.31, beside getdango, has
            # no abort_packages: drop them).
            getattr(pipeline, "abort_packages", pipeline.drop_pending_packages)()
            pipeline.extract(dlt_source)
            normalize_info = pipeline.normalize()
            prepared = time.monotonic() - started
            row_counts: dict[str, int] = dict(normalize_info.row_counts) if normalize_info else {}
            with gate.hold(
                context, operation=f"dlt load {source.name}", phase="data_load"
            ) as session:
                blocked = _empty_replace_block(config, source, dlt_source, selected, row_counts)
                if blocked:
                    pipeline.drop_pending_packages()  # never loaded later by another run
                    raise dg.Failure(description=blocked)
                load_info = pipeline.load()
                load_info.raise_on_failed_jobs()
                loaded = sum(row_counts.get(t, 0) for t in selected)
                with contextlib.closing(connect_warehouse(config, read_only=False)) as con:
                    sync_history.record(
                        config,
                        source.name,
                        started_at,
                        "success",
                        loaded,
                        None,
                        context.run.run_id,
                        con=con,
                    )
    except Exception as exc:
        sync_history.record(
            config, source.name, started_at, "failed", 0, str(exc), context.run.run_id
        )
        raise
    context.log.info(
        f"Loaded {loaded} rows into {source.schema_name} (extract+normalize {prepared:.2f} s "
        f"outside the lock; load held it {session.held_seconds:.2f} s after waiting "
        f"{session.wait_seconds:.2f} s)."
    )
    for table in sorted(selected):
        yield dg.MaterializeResult(
            asset_key=keys[table],
            metadata={
                **_table_metadata(pipeline, table, row_counts.get(table, 0)),
                **session.metadata(),
                META_ROWS_LOADED: dg.MetadataValue.int(row_counts.get(table, 0)),
                "extract_normalize_seconds": dg.MetadataValue.float(round(prepared, 3)),
            },
        )


def build_dlt_asset(
    config: ProjectConfig, source: DangoSource, names: ProjectNames | None = None
) -> dg.AssetsDefinition:
    """dagster-dlt's asset specs for one dlt source; the body runs :func:`run_ingestion`.

    What ``@dlt_assets`` builds, minus the dlt source, pipeline and translator objects it stores
    as definition metadata for its ``DagsterDltResource`` (not used here): the UI could only show
    them as "(unserializable)" rows; plus what ``@dlt_assets`` cannot take: the gate's resource
    key, per project so two projects never collide.
    """
    names = names or ProjectNames()
    gate_key = names.gate_resource
    specs = [
        spec.replace_attributes(
            metadata={k: v for k, v in spec.metadata.items() if not k.startswith("dagster_dlt/")}
        )
        for spec in build_dlt_asset_specs(
            dlt_source=build_dlt_source(config, source),
            dlt_pipeline=build_pipeline(config, source),
            dagster_dlt_translator=DangoDltTranslator(config, source, names),
        )
    ]

    @dg.multi_asset(
        name=names.name(f"ingest_{source.name}"),
        specs=specs,
        can_subset=True,
        required_resource_keys={gate_key},
        op_tags=warehouse_op_tags(config),
    )
    def _ingest(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult]:
        gate: WarehouseLockGate = getattr(context.resources, gate_key)
        yield from run_ingestion(context, gate, source.name, config)

    return _ingest
