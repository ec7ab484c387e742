"""The Metabase compose file must mount the published snapshot, read-only, never the live file.

No Docker engine runs on the CI machines, so this checks the file a user runs, not a container.
"""

import yaml

from dango_dagster.config import REPO_ROOT, load_config


def test_metabase_mounts_published_snapshot_read_only() -> None:
    compose = yaml.safe_load((REPO_ROOT / "deploy" / "metabase" / "docker-compose.yml").read_text())
    volumes = compose["services"]["metabase"]["volumes"]
    # "source:target:mode", where the source may hold a ${VAR:-default} with colons of its own
    mounts = [v.rsplit(":", 2) for v in volumes if v.count(":") >= 2]
    data_mounts = [m for m in mounts if m[1] == "/data"]
    assert len(data_mounts) == 1
    source, _, mode = data_mounts[0]
    assert mode == "ro"
    published = load_config(REPO_ROOT).published_dir.relative_to(REPO_ROOT)
    assert source.endswith("/" + published.as_posix())
    assert "data/warehouse" not in " ".join(volumes)
