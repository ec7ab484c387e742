"""The Dagster definitions of this Dango project: what ``dagster dev`` and ``dagster asset
materialize -m dango_dagster.definitions`` load.

The project folder is ``DANGO_PROJECT_DIR`` (default: the current folder); everything about it is
read from its ``.dango/project.yml`` (see ``dango_dagster.config``).
"""

from dango_dagster.config import load_config
from dango_dagster.defs.builder import build_definitions

defs = build_definitions(load_config())
