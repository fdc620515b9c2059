"""JSON on the lane's hot path: orjson (several times faster than json), json where orjson refuses.

orjson refuses NaN / Infinity when reading, and integers beyond 64 bits or non-string keys when writing;
the standard library accepts them, so those rare values still go through, only slower.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def loads_standard(text: str | bytes) -> tuple[Any, bool]:
    """The value and whether ``text`` is standard JSON (orjson read it). Standard text can be passed on as
    it is, and should be: it says exactly what was sent (an integer beyond 64 bits is read as a float, and
    writing that again would round it). Text only the standard library reads (NaN, Infinity) is not
    standard: write the value again (orjson makes NaN ``null``)."""
    try:
        return orjson.loads(text), True
    except orjson.JSONDecodeError:
        return json.loads(text), False


def dumps(value: Any) -> str:
    """Compact JSON text (UTF-8 characters kept as they are)."""
    return dumps_bytes(value).decode()


def dumps_bytes(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
