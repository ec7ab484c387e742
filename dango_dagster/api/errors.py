"""``ApiError`` and ``SqlRejected``: defined with every other error in ``dango_dagster.errors``."""

from dango_dagster.errors import ApiError, SqlRejected

__all__ = ["ApiError", "SqlRejected"]
