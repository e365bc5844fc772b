"""Records as JSON, with the Python values that rows and cache entries hold.

JSON has no dates, decimals, UUIDs or bytes, and a spilled row must come back with the
very values it had, or the database would store a string where a timestamp was (SQLite
through SQLAlchemy refuses it outright). Such values are written as a two-key object,
``{"$type": "datetime", "value": "2026-11-30T12:00:00+00:00"}``, and read back as the
original type. A mapping of the user's that has exactly the keys ``$type`` and
``value`` with one of these type names would be read back as that type.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import uuid
from collections.abc import Callable
from typing import Any

_TYPE = "$type"

_ENCODERS: list[tuple[type, str, Callable[[Any], Any]]] = [
    # datetime before date: a datetime is a date too.
    (dt.datetime, "datetime", lambda v: v.isoformat()),
    (dt.date, "date", lambda v: v.isoformat()),
    (dt.time, "time", lambda v: v.isoformat()),
    (dt.timedelta, "timedelta", lambda v: [v.days, v.seconds, v.microseconds]),
    (decimal.Decimal, "decimal", str),
    (uuid.UUID, "uuid", str),
    (bytes, "bytes", lambda v: base64.b64encode(v).decode()),
    (tuple, "tuple", list),
    (frozenset, "frozenset", list),
    (set, "set", list),
]

_DECODERS: dict[str, Callable[[Any], Any]] = {
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "timedelta": lambda v: dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
    "decimal": decimal.Decimal,
    "uuid": uuid.UUID,
    "bytes": base64.b64decode,
    "tuple": tuple,
    "frozenset": frozenset,
    "set": set,
}


def encode(record: Any) -> bytes:
    """*record* as one line of compact JSON (UTF-8), tagged values included.

    Raises:
        TypeError: A value of a type with no JSON form here.
    """
    return json.dumps(
        _tag(record), separators=(",", ":"), ensure_ascii=False, allow_nan=True
    ).encode()


def decode(data: bytes) -> Any:
    """The record that `encode` wrote.

    Raises:
        ValueError: Not JSON, not UTF-8, or a tagged value that does not read back.
    """
    try:
        return json.loads(data, object_hook=_untag)
    except (TypeError, KeyError, IndexError, decimal.InvalidOperation) as exc:
        raise ValueError(str(exc)) from exc


def _tag(value: Any) -> Any:
    # Walk the record ourselves: json's `default` never sees tuples, which it writes
    # as lists, and a tuple key in a cache must come back as a tuple.
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {_key(k): _tag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tag(v) for v in value]
    for kind, name, convert in _ENCODERS:
        if isinstance(value, kind):
            converted = convert(value)
            if isinstance(converted, list):
                converted = [_tag(v) for v in converted]
            return {_TYPE: name, "value": converted}
    raise TypeError(
        f"cannot spill a value of type {type(value).__name__}: supported are JSON types, "
        "datetime, date, time, timedelta, Decimal, UUID, bytes, tuple and set"
    )


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    raise TypeError(f"cannot spill a mapping with a key of type {type(key).__name__}: {key!r}")


def _untag(obj: dict[str, Any]) -> Any:
    if len(obj) == 2 and _TYPE in obj and "value" in obj:  # noqa: PLR2004 - the two keys
        decoder = _DECODERS.get(obj[_TYPE])
        if decoder is not None:
            return decoder(obj["value"])
    return obj
