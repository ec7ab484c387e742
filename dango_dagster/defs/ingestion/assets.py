"""Ingestion assets: one asset group ``raw_<source>`` per enabled source of ``sources.yml``.

- csv / local_files sources: one asset ``raw_<src>/<src>``, loaded by Dango's file loader
  (``dango_files.py``): files are parsed outside the lock, the live table is swapped under it.
- every other type: dagster-dlt, one asset per dlt resource ``raw_<src>/<resource>``
  (``dlt_asset.py``, imported only for such a source); dlt's extract and normalize run outside
  the gate, only ``pipeline.load()`` (the step that opens the DuckDB file) inside it.

Each sync appends a row to Dango's sync history (``sync_history.py``), failed ones included.
"""

import dagster as dg

from dango_dagster.config import ProjectConfig
from dango_dagster.constants import ProjectNames
from dango_dagster.dango_project import DangoSource
from dango_dagster.defs.ingestion.files_asset import build_files_asset
from dango_dagster.defs.ingestion.keys import source_asset_key

_NO_NAMES = ProjectNames()


def source_location(config: ProjectConfig, source: DangoSource) -> str:
    """Where a source reads from, in words (a folder and pattern, a URL, a module)."""
    if source.is_files:
        return str(config.source_dir(source) / source.file_pattern)
    settings = source.type_config()
    native = source.dlt_native or {}
    for key in ("base_url", "bucket_url", "source_module"):
        if settings.get(key) or native.get(key):
            return str(settings.get(key) or native.get(key))
    return source.type


def source_specs(
    config: ProjectConfig, source: DangoSource, names: ProjectNames = _NO_NAMES
) -> list[dg.AssetSpec]:
    """External assets for what the raw tables are loaded from, so lineage starts at the source."""
    where = source_location(config, source)
    kinds = {"csv" if source.type == "csv" else "files"} if source.is_files else {source.type}
    return [
        dg.AssetSpec(
            key=source_asset_key(source, table, names),
            group_name=names.group("sources"),
            kinds=kinds,
            description=source.description
            or f"{source.type} source {source.name!r}, table {table} (from {where}).",
            metadata={"location": dg.MetadataValue.text(str(where))},
        )
        for table in _tables(config, source)
    ]


def _tables(config: ProjectConfig, source: DangoSource) -> list[str]:
    if source.is_files:  # one table, named after the source: no need to import dlt
        return [source.name]
    from dango_dagster.defs.ingestion.sources import source_tables

    return source_tables(config, source)


def build_ingestion_assets(
    config: ProjectConfig, source: DangoSource, names: ProjectNames = _NO_NAMES
) -> dg.AssetsDefinition:
    """The ingestion asset(s) of one source: Dango's file loader, or dlt (``dlt_asset.py``)."""
    if source.is_files:
        return build_files_asset(config, source, names)
    from dango_dagster.defs.ingestion.dlt_asset import build_dlt_asset  # dlt only if needed

    return build_dlt_asset(config, source, names)
