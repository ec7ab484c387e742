"""The snapshot asset: consistent, point-in-time copies of the warehouse for every reader.

Readers (notebooks, the query API, Metabase) never open the live file, so they can never block a
writer. This asset runs once dbt has finished, takes one verified copy under the gate, publishes it
atomically and hard-links it for each notebook user (see ``dango_dagster.snapshots``).
"""

from collections.abc import Sequence

import dagster as dg

from dango_dagster.config import ProjectConfig
from dango_dagster.constants import (
    META_LOCK_HELD,
    META_LOCK_WAIT,
    META_PUBLISHED_PATH,
    META_SNAPSHOT_BYTES,
    ProjectNames,
)
from dango_dagster.defs.gate import WarehouseLockGate, warehouse_op_tags

SNAPSHOT_KEY = dg.AssetKey(["snapshots", "warehouse"])


def build_snapshot_asset(
    config: ProjectConfig, upstream: Sequence[dg.AssetKey], names: ProjectNames | None = None
) -> dg.AssetsDefinition:
    """The snapshot asset, downstream of every dbt model in ``upstream``."""
    names = names or ProjectNames()
    gate_key = names.gate_resource

    @dg.asset(
        key=dg.AssetKey(names.key_path(*SNAPSHOT_KEY.path)),
        deps=list(upstream),
        group_name=names.group("snapshots"),
        required_resource_keys={gate_key},
        kinds={"duckdb"},
        op_tags=warehouse_op_tags(config),
        automation_condition=dg.AutomationCondition.eager(),
        description=(
            "Published read-only copy of the warehouse (query API, Metabase) and per-user "
            "notebook snapshots, taken under the warehouse lock after CHECKPOINT and verified "
            "before publishing."
        ),
    )
    def warehouse_snapshot(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from dango_dagster.snapshots import take_snapshot

        warehouse_gate: WarehouseLockGate = getattr(context.resources, gate_key)
        config = warehouse_gate.project_config()
        if config.settings.warehouse.kind == "ducklake":
            return _publish_lake_snapshot(context, warehouse_gate)
        result = take_snapshot(
            config, lock=warehouse_gate.hold(context, operation="snapshot", phase="snapshot")
        )
        context.log.info(
            f"Published {result.published_path} ({result.size_bytes / 1e6:.1f} MB, "
            f"{result.tables} tables); copy {result.copy_seconds:.2f} s, "
            f"verify {result.verify_seconds:.2f} s, lock held {result.lock_held_seconds:.2f} s."
        )
        return dg.MaterializeResult(
            metadata={
                META_PUBLISHED_PATH: dg.MetadataValue.path(str(result.published_path)),
                META_SNAPSHOT_BYTES: dg.MetadataValue.int(result.size_bytes),
                "snapshot_size_mb": dg.MetadataValue.float(round(result.size_bytes / 1e6, 3)),
                "tables": dg.MetadataValue.int(result.tables),
                "user_snapshots": dg.MetadataValue.json(
                    {user: str(path) for user, path in result.user_paths.items()}
                ),
                META_LOCK_WAIT: dg.MetadataValue.float(round(result.lock_wait_seconds, 4)),
                META_LOCK_HELD: dg.MetadataValue.float(round(result.lock_held_seconds, 4)),
                "copy_seconds": dg.MetadataValue.float(round(result.copy_seconds, 4)),
                "verify_seconds": dg.MetadataValue.float(round(result.verify_seconds, 4)),
            }
        )

    return warehouse_snapshot


def _publish_lake_snapshot(
    context: dg.AssetExecutionContext, warehouse_gate: WarehouseLockGate
) -> dg.MaterializeResult:
    """DuckLake: every commit already is a readable snapshot; publishing pins readers to the
    current one (one number written, O(1) at any size) instead of copying a file."""
    from dango_dagster.lake import publish_snapshot

    config = warehouse_gate.project_config()
    with warehouse_gate.hold(context, operation="publish snapshot", phase="snapshot") as session:
        record = publish_snapshot(config)
    context.log.info(
        f"Published DuckLake snapshot {record['snapshot_id']} in {record['seconds'] * 1000:.1f} ms."
    )
    return dg.MaterializeResult(
        metadata={
            "ducklake_snapshot_id": dg.MetadataValue.int(record["snapshot_id"]),
            "publish_seconds": dg.MetadataValue.float(round(record["seconds"], 4)),
            **session.metadata(),
        }
    )
