"""Ingestion: dlt sources and the assets that load them under the lock gate."""
