"""Build hook: put the demo templates into the wheel as package data.

The repository root is itself the demo project (``.dango/*.yml``, ``dbt_project/``,
``dagster_home/dagster.yaml``, ``workspace.yaml``); those files stay the one copy. Building a wheel
copies them into ``dango_dagster/templates/demo/``, where ``config.shipped_file`` reads them with
``importlib.resources`` when the package is installed from a wheel rather than from a checkout.
Everything else is declared in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# Build output and local state of the dbt project never ship.
_DBT_SKIP = shutil.ignore_patterns("target", "logs", "dbt_packages", ".user.yml", "__pycache__")


class BuildPyWithTemplates(build_py):
    def run(self) -> None:
        super().run()
        demo = Path(self.build_lib) / "dango_dagster" / "templates" / "demo"
        if demo.exists():
            shutil.rmtree(demo)
        (demo / ".dango").mkdir(parents=True)
        for path in sorted((ROOT / ".dango").glob("*.yml")):
            shutil.copyfile(path, demo / ".dango" / path.name)
        shutil.copytree(ROOT / "dbt_project", demo / "dbt_project", ignore=_DBT_SKIP)
        (demo / "dagster_home").mkdir()
        shutil.copyfile(
            ROOT / "dagster_home" / "dagster.yaml", demo / "dagster_home" / "dagster.yaml"
        )
        shutil.copyfile(ROOT / "workspace.yaml", demo / "workspace.yaml")


setup(cmdclass={"build_py": BuildPyWithTemplates})
