"""The warehouse on DuckLake (``warehouse.kind: ducklake``), with no Dagster in it.

``extensions`` lays DuckDB's extension packages out for offline use; ``catalog`` attaches the lake
and pins readers to a published snapshot. See docs/SCALING.md.
"""

from dango_dagster.lake.catalog import (
    LAKE_NAME,
    Lake,
    connect_warehouse,
    lake_for,
    open_published,
    publish_snapshot,
    published_snapshot,
)

__all__ = [
    "LAKE_NAME",
    "Lake",
    "connect_warehouse",
    "lake_for",
    "open_published",
    "publish_snapshot",
    "published_snapshot",
]
