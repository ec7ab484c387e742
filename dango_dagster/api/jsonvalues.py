"""Turn what DuckDB returns into JSON values, so any result serializes (no 500 on a BLOB).

Choices (documented in docs/API.md): dates and times as ISO 8601 strings, DECIMAL as a JSON
number (cast to VARCHAR in SQL when every digit matters), UUID as a string, BLOB as base64,
INTERVAL as an ISO 8601 duration, NaN and infinities as null (JSON has no spelling for them),
STRUCT as an object, LIST/ARRAY as an array, MAP as an object with string keys.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import uuid
from collections.abc import Callable, Sequence
from typing import Any


def _float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _decimal(value: decimal.Decimal) -> float | None:
    return _float(float(value))


def _interval(value: dt.timedelta) -> str:
    seconds = value.seconds + value.microseconds / 1_000_000
    return f"P{value.days}DT{seconds:g}S"


def _blob(value: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(bytes(value)).decode("ascii")


def _iso(value: dt.date | dt.time) -> str:
    return value.isoformat()


def _sequence(value: Sequence[Any]) -> list[Any]:
    return [to_json(item) for item in value]


def _mapping(value: dict[Any, Any]) -> dict[str, Any]:
    return {k if isinstance(k, str) else str(to_json(k)): to_json(v) for k, v in value.items()}


_CONVERTERS: dict[type, Callable[[Any], Any]] = {
    float: _float,
    decimal.Decimal: _decimal,
    dt.datetime: _iso,
    dt.date: _iso,
    dt.time: _iso,
    dt.timedelta: _interval,
    uuid.UUID: str,
    bytes: _blob,
    bytearray: _blob,
    memoryview: _blob,
    list: _sequence,
    tuple: _sequence,
    dict: _mapping,
}
_PLAIN = (str, int, bool, type(None))


def to_json(value: Any) -> Any:
    """One DuckDB value as a JSON-serializable value."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    convert = _CONVERTERS.get(kind)
    if convert is not None:
        return convert(value)
    for base, convert in _CONVERTERS.items():
        if isinstance(value, base):
            return convert(value)
    return str(value)


def rows_to_json(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    return [[to_json(value) for value in row] for row in rows]
