"""Compiled readers of flat Avro records: straight-line Python made from the schema, ≈ 3× fastavro's speed.

fastavro's ``schemaless_reader`` walks the parsed schema for every record and spends ≈ 8 µs on a 19-field
``EventRecord`` (its fixed cost per call alone is ≈ 0.7 µs), the largest item of the worker's cost per
event. Records of the hot topics are flat: strings, longs, ints, booleans, bytes, unions of null and one
of those, maps of strings and arrays of bytes or strings. For such a schema :func:`record_reader` builds one
Python function that reads the fields in order, with the one-byte varint (every length under 64, every
union index) read inline; it returns the same dict as fastavro with timestamps as plain epoch milliseconds
(as :func:`~inflow.schemas.plain.plain_schema` does). A schema with any other type gets ``None``: its
records stay with fastavro.

Bad bytes are refused as fastavro refuses them (a union index out of range, a negative length, data that
ends inside a field, invalid UTF-8), with :class:`ValueError`, :class:`IndexError` or
:class:`UnicodeDecodeError`; the caller names the record. Equality with fastavro over every field type is
tested in ``tests/schemas/test_avro_reader.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inflow.schemas.avro_template import read_long

Reader = Callable[[bytes, int], tuple[dict[str, Any], int]]
PRIMITIVES = ("string", "bytes", "long", "int", "boolean")


def _kind(schema: Any) -> str | None:
    """The reader's name for a field type, or None when it is not supported."""
    if isinstance(schema, str):
        return schema if schema in PRIMITIVES else None
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("long", "int") and schema.get("logicalType") in (None, "timestamp-millis"):
            return "long"
        if kind == "map" and schema.get("values") == "string":
            return "map"
        if kind == "array" and schema.get("items") in ("string", "bytes"):
            return f"array_{schema['items']}"
        return None
    if isinstance(schema, list) and len(schema) == 2 and schema[0] == "null":
        inner = _kind(schema[1])
        return f"null_{inner}" if inner in PRIMITIVES or inner == "long" else None
    return None


def _varint(target: str, indent: str) -> list[str]:
    """Read a zig-zag varint into ``target``, inline (a timestamp takes six bytes)."""
    return [
        f"{indent}b = data[pos]",
        f"{indent}pos += 1",
        f"{indent}if b < 128:",
        f"{indent}    {target} = (b >> 1) ^ -(b & 1)",
        f"{indent}else:",
        f"{indent}    v = b & 127",
        f"{indent}    shift = 7",
        f"{indent}    while True:",
        f"{indent}        b = data[pos]",
        f"{indent}        pos += 1",
        f"{indent}        v |= (b & 127) << shift",
        f"{indent}        if b < 128:",
        f"{indent}            break",
        f"{indent}        shift += 7",
        f"{indent}        if shift > 63:",
        f"{indent}            raise ValueError('varint longer than a 64-bit long')",
        f"{indent}    {target} = (v >> 1) ^ -(v & 1)",
    ]


def _value(kind: str, target: str, indent: str) -> list[str]:
    if kind in ("long", "int"):
        return _varint(target, indent)
    if kind == "boolean":
        return [
            f"{indent}b = data[pos]",
            f"{indent}if b > 1:",
            f"{indent}    raise ValueError('boolean byte ' + str(b))",
            f"{indent}{target} = b == 1",
            f"{indent}pos += 1",
        ]
    # string or bytes: a length, then as many bytes
    lines = _varint("n", indent)
    lines += [
        f"{indent}end = pos + n",
        f"{indent}if n < 0 or end > size:",
        f"{indent}    raise ValueError('data ends inside a field')",
        f"{indent}{target} = data[pos:end]" + (".decode()" if kind == "string" else ""),
        f"{indent}pos = end",
    ]
    return lines


def _field(kind: str, target: str) -> list[str]:
    indent = "    "
    if kind.startswith("null_"):
        lines = [
            f"{indent}b = data[pos]",
            f"{indent}pos += 1",
            f"{indent}if b == 0:",
            f"{indent}    {target} = None",
            f"{indent}elif b == 2:",
        ]
        lines += _value(kind[5:], target, indent + "    ")
        lines += [f"{indent}else:", f"{indent}    raise ValueError('union index ' + str(b))"]
        return lines
    if kind == "map":  # mostly empty: one zero byte
        return [
            f"{indent}if data[pos] == 0:",
            f"{indent}    {target} = {{}}",
            f"{indent}    pos += 1",
            f"{indent}else:",
            f"{indent}    {target}, pos = _map(data, pos, size)",
        ]
    if kind.startswith("array_"):
        return [f"{indent}{target}, pos = _array(data, pos, size, {kind == 'array_string'})"]
    return _value(kind, target, indent)


def _blocks(data: bytes, pos: int) -> tuple[int, int]:
    """A block's item count (a negative count is followed by the block's size in bytes)."""
    count, pos = read_long(data, pos)
    if count < 0:
        count = -count
        _, pos = read_long(data, pos)
    return count, pos


def _string(data: bytes, pos: int, size: int) -> tuple[bytes, int]:
    n, pos = read_long(data, pos)
    end = pos + n
    if n < 0 or end > size:
        raise ValueError("data ends inside a field")
    return data[pos:end], end


def _map(data: bytes, pos: int, size: int) -> tuple[dict[str, str], int]:
    out: dict[str, str] = {}
    while True:
        count, pos = _blocks(data, pos)
        if count == 0:
            return out, pos
        for _ in range(count):
            key, pos = _string(data, pos, size)
            value, pos = _string(data, pos, size)
            out[key.decode()] = value.decode()


def _array(data: bytes, pos: int, size: int, text: bool) -> tuple[list[Any], int]:
    out: list[Any] = []
    while True:
        count, pos = _blocks(data, pos)
        if count == 0:
            return out, pos
        for _ in range(count):
            item, pos = _string(data, pos, size)
            out.append(item.decode() if text else item)


def _fields(schema: dict[str, Any]) -> tuple[list[str], list[str]] | None:
    """The schema's field names and reader kinds; None when a field's type is not one this module reads."""
    names, kinds = [], []
    for field in schema["fields"]:
        kind = _kind(field["type"])
        if kind is None:
            return None
        names.append(field["name"])
        kinds.append(kind)
    return names, kinds


def _compile(body: list[str], label: str) -> dict[str, Any]:
    """The functions the generated ``body`` defines."""
    namespace: dict[str, Any] = {"read_long": read_long, "_map": _map, "_array": _array}
    exec(compile("\n".join(body), f"<{label}>", "exec"), namespace)  # noqa: S102 - generated here
    return namespace


def record_reader(schema: dict[str, Any], skip: frozenset[str] = frozenset()) -> Reader | None:
    """``read(data, pos) -> (record, position after it)`` for a flat record schema (its JSON form), or
    None when a field's type is not one this module reads. Fields named in ``skip`` are stepped over
    (their lengths and union indexes checked, their text not decoded) and left out of the record."""
    fields = _fields(schema)
    if fields is None:
        return None
    names, kinds = fields
    body = ["def read(data, pos):", "    size = len(data)"]
    for index, kind in enumerate(kinds):
        if names[index] in skip and kind in ("string", "null_string"):
            kind = kind.replace("string", "bytes")  # the same bytes on the wire, no decoding
        body += _field(kind, f"f{index}")
    items = ", ".join(f"{name!r}: f{index}" for index, name in enumerate(names) if name not in skip)
    body.append(f"    return {{{items}}}, pos")
    return _compile(body, f"avro reader of {schema['name']}")["read"]  # type: ignore[no-any-return]


@dataclass(slots=True)
class SpanReader:
    """Reads records whose fields ``first``..``last`` (a run in the schema's order) are often the same bytes
    as in the record before: the events of one pack share their workspace, request, user and device fields.

    ``read(data, pos) -> (record, end, span start, span end)`` reads a whole record and says where that
    span's bytes are; ``read_after(data, pos, shared, before) -> (record, end) | None`` reads the next
    record when its span holds exactly the bytes ``shared`` (compared as bytes: Avro is self-delimiting, so
    equal bytes are equal values), taking their values from ``before`` and reading only the others; None
    when the span differs (then ``read`` it)."""

    read: Callable[[bytes, int], tuple[dict[str, Any], int, int, int]]
    read_after: Callable[[bytes, int, bytes, dict[str, Any]], tuple[dict[str, Any], int] | None]


def span_reader(schema: dict[str, Any], first: str, last: str) -> SpanReader | None:
    """A :class:`SpanReader` for a flat record schema whose fields ``first`` to ``last`` are the span; None
    when a field type is not one this module reads."""
    fields = _fields(schema)
    if fields is None or first not in fields[0] or last not in fields[0]:
        return None
    names, kinds = fields
    a, b = names.index(first), names.index(last)
    if a > b:
        return None
    items = ", ".join(f"{name!r}: f{index}" for index, name in enumerate(names))
    body = ["def read(data, pos):", "    size = len(data)"]
    for index, kind in enumerate(kinds):
        if index == a:
            body.append("    start = pos")
        body += _field(kind, f"f{index}")
        if index == b:
            body.append("    end_span = pos")
    body.append(f"    return {{{items}}}, pos, start, end_span")
    body += ["def read_after(data, pos, shared, before):", "    size = len(data)"]
    for index in range(a):
        body += _field(kinds[index], f"f{index}")
    body += ["    if not data.startswith(shared, pos):", "        return None", "    pos += len(shared)"]
    for index in range(b + 1, len(kinds)):
        body += _field(kinds[index], f"f{index}")
    body.append("    record = before.copy()")
    body += [f"    record[{names[i]!r}] = f{i}" for i in [*range(a), *range(b + 1, len(names))]]
    body.append("    return record, pos")
    namespace = _compile(body, f"avro span reader of {schema['name']}")
    return SpanReader(namespace["read"], namespace["read_after"])


RawAfter = Callable[[bytes, int, bytes], tuple[Any, ...] | None]


def raw_after(schema: dict[str, Any], first: str, last: str, take: dict[str, str]) -> RawAfter | None:
    """For the record after one read with :class:`SpanReader` (same ``first``..``last`` span), the fields
    named in ``take`` as the caller will pass them on, without decoding or building a record:

    - ``"enc"``: a string or nullable field's own Avro bytes (length or union index included), which a
      schema with the same field type takes as they are;
    - ``"text"``: a string's UTF-8 bytes, not decoded (the caller checks them);
    - ``"both"``: ``enc`` then ``text``;
    - ``"long"``: a long's value;
    - ``"null"``: the field must be null (else the function returns None).

    ``raw(data, pos, shared) -> tuple | None``: the values in the schema's order of ``take``; None when
    the span is not ``shared``, a ``"null"`` field is not null, or the record does not end with the data.
    Every other field is stepped over with its lengths and union indexes checked, as :func:`record_reader`
    reads them; malformed bytes raise as there."""
    fields = _fields(schema)
    if fields is None or first not in fields[0] or last not in fields[0] or set(take) - set(fields[0]):
        return None
    names, kinds = fields
    a, b = names.index(first), names.index(last)
    if a > b or any(a <= names.index(name) <= b for name in take):
        return None
    out: list[str] = []
    body = ["def raw(data, pos, shared):", "    size = len(data)"]
    for index, (name, kind) in enumerate(zip(names, kinds, strict=True)):
        if index == a:
            body += [
                "    if not data.startswith(shared, pos):",
                "        return None",
                "    pos += len(shared)",
            ]
        if a <= index <= b:
            continue
        mode = take.get(name)
        if mode == "null":
            if not kind.startswith("null_"):
                return None
            body += ["    if data[pos] != 0:", "        return None", "    pos += 1"]
            continue
        if mode in ("long",) and kind != "long":
            return None
        if mode in ("text", "both") and kind != "string":
            return None
        if mode in ("enc", "both"):
            body.append(f"    s{index} = pos")
        stepped = kind.replace("string", "bytes") if kind in ("string", "null_string") else kind
        body += _field(stepped, f"f{index}")
        if mode in ("enc", "both"):
            body.append(f"    e{index} = pos")
            out.append(f"data[s{index}:e{index}]")
        if mode in ("text", "both", "long"):
            out.append(f"f{index}")
    body += ["    if pos != size:", "        return None", f"    return ({', '.join(out)},)"]
    return _compile(body, f"avro raw reader of {schema['name']}")["raw"]  # type: ignore[no-any-return]
