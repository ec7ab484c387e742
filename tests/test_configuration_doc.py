"""docs/CONFIGURATION.md documents every key config.py accepts, with its real default."""

from __future__ import annotations

import re

from pydantic import BaseModel

from dango_dagster.config import REPO_ROOT, _ConfigFile
from dango_dagster.dango_project import PlatformSettings

DOC = (REPO_ROOT / "docs" / "CONFIGURATION.md").read_text(encoding="utf-8")


def _documented_rows(section: str) -> set[str]:
    match = re.search(rf"^## `{section}`\n(.*?)(?=^## )", DOC, flags=re.MULTILINE | re.DOTALL)
    assert match, f"no '## `{section}`' section in docs/CONFIGURATION.md"
    return set(re.findall(r"^\| `([a-z_]+)` \|", match.group(1), flags=re.MULTILINE))


def test_every_key_of_our_file_is_documented_in_its_section() -> None:
    for section, field in _ConfigFile.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel), section
        assert _documented_rows(section) == set(model.model_fields), section


def test_every_dango_platform_key_we_read_is_documented() -> None:
    assert _documented_rows("platform") == set(PlatformSettings.model_fields)


def test_the_full_example_shows_the_real_defaults() -> None:
    import yaml

    block = re.search(
        r"### The whole file, with every default\n\n```yaml\n(.*?)```", DOC, re.DOTALL
    )
    assert block
    assert yaml.safe_load(block.group(1)) == _ConfigFile().model_dump()
