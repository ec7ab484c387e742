"""Asset keys of the ingestion graph, shared by the file and dlt assets and the dbt translator."""

import dagster as dg

from dango_dagster.constants import ProjectNames
from dango_dagster.dango_project import DangoSource

_NO_NAMES = ProjectNames()


def source_asset_key(
    source: DangoSource, table: str, names: ProjectNames = _NO_NAMES
) -> dg.AssetKey:
    """The outside data a raw table comes from (upload files, an API): the graph's first node."""
    return dg.AssetKey(names.key_path("source", source.name, table))


def raw_asset_key(source: DangoSource, table: str, names: ProjectNames = _NO_NAMES) -> dg.AssetKey:
    """Same key dagster-dbt gives the dbt source ``raw_<source>.<table>``: one lineage graph."""
    return dg.AssetKey(names.key_path(source.schema_name, table))
