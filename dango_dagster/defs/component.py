"""``DangoProjectComponent``: a Dango project folder as a Component of a user's ``dg`` project.

.. code-block:: yaml

    # defs/shop/defs.yaml  (dg scaffold defs dango_dagster.DangoProjectComponent shop)
    type: dango_dagster.DangoProjectComponent
    attributes:
      project_dir: "{{ project_root }}/../shop"   # the folder `dango init` made
      key_prefix: shop                             # optional: prefixes every asset key

Built like dagster-dbt's ``DbtProjectComponent`` and dagster-dlt's ``DltLoadCollectionComponent``
(``dg.Component`` + ``dg.Model`` + ``dg.Resolvable``, a scaffolder for ``dg scaffold defs``), on
``build_dango_defs``. Job, schedule, sensor and resource names carry ``key_prefix`` (else the
component's folder name), so several components load side by side; two projects whose asset keys
overlap need a ``key_prefix`` each, and loading says so instead of failing on a duplicate key.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import dagster as dg
from pydantic import BaseModel, Field

from dango_dagster.errors import ProjectConfigError

__all__ = ["DangoProjectComponent", "DangoProjectScaffolder"]

# Asset keys of every DangoProjectComponent loaded in this process, per dg project and component
# folder: how a collision between two components is found before Dagster reports a bare duplicate.
_LOADED: dict[tuple[Path, Path], tuple[str, set[dg.AssetKey]]] = {}
_GUARD = threading.Lock()


class DangoScaffoldParams(BaseModel):
    project_dir: str | None = Field(default=None, description="The Dango project folder.")
    key_prefix: str | None = Field(default=None, description="Prefix of every asset key.")


class DangoProjectScaffolder(dg.Scaffolder[DangoScaffoldParams]):
    """``dg scaffold defs dango_dagster.DangoProjectComponent NAME [--project-dir DIR]``."""

    @classmethod
    def get_scaffold_params(cls) -> type[DangoScaffoldParams]:
        return DangoScaffoldParams

    def scaffold(self, request: dg.ScaffoldRequest[DangoScaffoldParams]) -> None:
        params = request.params
        attributes: dict[str, str] = {
            "project_dir": params.project_dir or "{{ project_root }}/path/to/dango_project"
        }
        if params.key_prefix:
            attributes["key_prefix"] = params.key_prefix
        dg.scaffold_component(request, attributes)


def _scope_from_path(path: Path) -> str:
    """A name for a component without ``key_prefix``: its folder, as a Dagster name."""
    scope = re.sub(r"[^A-Za-z0-9_]+", "_", path.name).strip("_") or "dango"
    return scope if scope[0].isalpha() else f"p_{scope}"


@dg.scaffold_with(DangoProjectScaffolder)
class DangoProjectComponent(dg.Component, dg.Model, dg.Resolvable):
    """A Dango project (``dango init``'s folder): its sources as dlt assets, its dbt project as dbt
    assets with tests as checks, the snapshot asset, the pipeline job, the refresh schedule, the
    uploads and automation sensors, and the warehouse lock gate every write goes through."""

    project_dir: str = Field(
        description="The Dango project folder (holds .dango/); relative to this defs.yaml."
    )
    key_prefix: str | None = Field(
        default=None,
        description="Prefixes every asset key and group (needed when two projects share keys).",
    )

    def resolved_project_dir(self, context: dg.ComponentLoadContext) -> Path:
        path = Path(self.project_dir).expanduser()
        return path if path.is_absolute() else (context.path / path).resolve()

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        from dango_dagster.defs.builder import build_dango_defs

        project_dir = self.resolved_project_dir(context)
        if not (project_dir / ".dango").is_dir():
            raise ProjectConfigError(
                f"{context.path / 'defs.yaml'}: project_dir {project_dir} is not a Dango project "
                "(no .dango/ folder).",
                hint="Point project_dir at the folder `dango init` made.",
            )
        defs = build_dango_defs(
            project_dir,
            key_prefix=self.key_prefix,
            name=self.key_prefix or _scope_from_path(context.path),
        )
        self._check_collisions(context, defs)
        return defs

    def _check_collisions(self, context: dg.ComponentLoadContext, defs: dg.Definitions) -> None:
        keys = set(defs.resolve_asset_graph().get_all_asset_keys())
        here = (Path(context.project_root).resolve(), Path(context.path).resolve())
        with _GUARD:
            for (root, path), (label, other) in _LOADED.items():
                clash = keys & other
                if root == here[0] and path != here[1] and clash:
                    sample = ", ".join(sorted(k.to_user_string() for k in clash)[:3])
                    raise ProjectConfigError(
                        f"{context.path / 'defs.yaml'}: its Dango project has the same asset keys "
                        f"as the component in {label} ({sample}"
                        f"{', ...' if len(clash) > 3 else ''}).",
                        hint="Give each DangoProjectComponent its own `key_prefix` attribute "
                        "(e.g. key_prefix: shop).",
                    )
            _LOADED[here] = (str(here[1]), keys)
