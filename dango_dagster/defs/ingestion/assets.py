"""Ingestion assets: one ``@dlt_assets`` group per configured source, landing in ``raw_<source>``.

The load is split so the lock is held only while the warehouse is written: dlt's extract and
normalize steps (reading files or APIs, writing load packages under ``.dango/state/dlt``) run
outside the gate; only ``pipeline.load()``, which opens the DuckDB file, runs inside it.
"""

import time
from collections.abc import Iterator
from typing import Any

import dagster as dg
from dagster_dlt import DagsterDltTranslator, dlt_assets
from dagster_dlt.translator import DltResourceTranslatorData

from dango_dagster.config import ProjectConfig, SourceSettings
from dango_dagster.constants import META_COLUMN_SCHEMA, META_ROW_COUNT, META_TABLE_NAME
from dango_dagster.defs.gate import WarehouseLockGate
from dango_dagster.defs.ingestion.sources import build_dlt_source, build_pipeline, source_tables
from dango_dagster.lock.primitives import file_mutex


def source_asset_key(source: SourceSettings, table: str) -> dg.AssetKey:
    """The outside data a raw table comes from (upload files, an API): the graph's first node."""
    return dg.AssetKey(["source", source.name, table])


def raw_asset_key(source: SourceSettings, table: str) -> dg.AssetKey:
    """Same key dagster-dbt gives the dbt source ``raw_<source>.<table>``: one lineage graph."""
    return dg.AssetKey([source.schema_name, table])


class DangoDltTranslator(DagsterDltTranslator):
    def __init__(self, config: ProjectConfig, source: SourceSettings) -> None:
        super().__init__()
        self.config = config
        self.source = source

    def get_asset_spec(self, data: DltResourceTranslatorData) -> dg.AssetSpec:
        spec = super().get_asset_spec(data)
        table = data.resource.name
        return spec.replace_attributes(
            key=raw_asset_key(self.source, table),
            deps=[source_asset_key(self.source, table)],
            group_name=self.source.schema_name,
            description=(
                f"Table {self.source.schema_name}.{table} of the warehouse, loaded by dlt from "
                f"source {self.source.name!r} ({self.source.type})."
            ),
            kinds={"dlt", "duckdb"},
            automation_condition=None,
        )


def source_specs(config: ProjectConfig, source: SourceSettings) -> list[dg.AssetSpec]:
    """External assets for what the raw tables are loaded from, so lineage starts at the source."""
    if source.type == "files":
        where = config.source_path(source)
        kinds = {source.format}
    else:
        where = source.ref
        kinds = {"dlt"}
    return [
        dg.AssetSpec(
            key=source_asset_key(source, table),
            group_name="sources",
            kinds=kinds,
            description=f"{source.type} source {source.name!r}, table {table} (from {where}).",
            metadata={"location": dg.MetadataValue.text(str(where))},
        )
        for table in source_tables(config, source)
    ]


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


def run_ingestion(
    context: dg.AssetExecutionContext,
    gate: WarehouseLockGate,
    source_name: str,
) -> Iterator[dg.MaterializeResult]:
    """Extract and normalize outside the lock, load under it, report one result per table."""
    config = gate.project_config()
    source = config.source(source_name)
    selected = {key.path[-1] for key in context.selected_asset_keys}
    # Built fresh for each run, so files added since the definitions loaded are picked up.
    dlt_source = build_dlt_source(config, source)
    missing = selected - set(dlt_source.resources.keys())
    if missing:
        where = config.source_path(source) if source.type == "files" else source.ref
        raise dg.Failure(
            description=(
                f"Source {source.name!r} has no table(s) {', '.join(sorted(missing))} any more "
                f"(looked in {where})."
                " Restore the files, or reload the definitions so the asset list matches."
            )
        )
    dlt_source = dlt_source.with_resources(*sorted(selected))
    pipeline = build_pipeline(config, source)
    started = time.monotonic()
    # One ingestion of a source at a time: its dlt working folder (load packages, state) is
    # shared, and extract runs outside the warehouse lock (a kernel flock, freed if we die).
    with file_mutex(config.state_dir / f"dlt_{source.name}.lock"):
        pipeline.abort_packages()  # a crashed earlier run must not replay its packages
        pipeline.extract(dlt_source)
        normalize_info = pipeline.normalize()
        prepared = time.monotonic() - started
        row_counts: dict[str, int] = dict(normalize_info.row_counts) if normalize_info else {}
        with gate.hold(context, operation=f"dlt load {source.name}", phase="data_load") as session:
            load_info = pipeline.load()
    load_info.raise_on_failed_jobs()
    context.log.info(
        f"Loaded {sum(row_counts.get(t, 0) for t in selected)} rows into {source.schema_name} "
        f"(extract+normalize {prepared:.2f} s outside the lock; load held it "
        f"{session.held_seconds:.2f} s after waiting {session.wait_seconds:.2f} s)."
    )
    for table in sorted(selected):
        yield dg.MaterializeResult(
            asset_key=raw_asset_key(source, table),
            metadata={
                **_table_metadata(pipeline, table, row_counts.get(table, 0)),
                **session.metadata(),
                "extract_normalize_seconds": dg.MetadataValue.float(round(prepared, 3)),
            },
        )


def build_ingestion_assets(config: ProjectConfig, source: SourceSettings) -> dg.AssetsDefinition:
    """``@dlt_assets`` for one source; the body runs :func:`run_ingestion` through the gate."""

    @dlt_assets(
        dlt_source=build_dlt_source(config, source),
        dlt_pipeline=build_pipeline(config, source),
        name=f"ingest_{source.name}",
        dagster_dlt_translator=DangoDltTranslator(config, source),
    )
    def _ingest(
        context: dg.AssetExecutionContext, warehouse_gate: WarehouseLockGate
    ) -> Iterator[dg.MaterializeResult]:
        yield from run_ingestion(context, warehouse_gate, source.name)

    return _ingest
