"""Asset keys of the ingestion graph, shared by the file and dlt assets and the dbt translator."""

import dagster as dg

from dango_dagster.dango_project import DangoSource


def source_asset_key(source: DangoSource, table: str) -> dg.AssetKey:
    """The outside data a raw table comes from (upload files, an API): the graph's first node."""
    return dg.AssetKey(["source", source.name, table])


def raw_asset_key(source: DangoSource, table: str) -> dg.AssetKey:
    """Same key dagster-dbt gives the dbt source ``raw_<source>.<table>``: one lineage graph."""
    return dg.AssetKey([source.schema_name, table])
