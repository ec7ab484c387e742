"""A source module whose own import fails (a dependency is missing): the error must say which."""

import dango_missing_dependency_xyz  # noqa: F401


def source() -> None:  # pragma: no cover - never importable
    return None
