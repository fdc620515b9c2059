"""Fast reading of EnrichedEvent records for the export loop.

fastavro's ``schemaless_reader`` costs about 20 µs for one EnrichedEvent (its per-call setup dominates a
record this small), which was a third of the sink's CPU per delivered event. Records written with the
current schema in single-object framing are read by a decoder compiled here from that schema: straight-line
Python over the bytes (one slice and ``decode`` per string, varints of one byte read inline), a few µs per
record. It is built only when every field is of a kind it knows (string, long, ``timestamp-millis`` read as
epoch milliseconds, ``["null", string]``), and checked at start against fastavro on sample records;
the fields the sink never reads (``platform`` and the two timestamps) are stepped over, not decoded, and
left out of the dict. Otherwise, and for anything else (history versions, Confluent framing), records go
through the plain reader of :mod:`inflow.schemas.plain` or the shared serde. Truncated, malformed or
trailing bytes are a :class:`~inflow.schemas.exceptions.SerdeError`, as there.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from fastavro import schemaless_writer

from inflow.schemas.avro_template import read_long
from inflow.schemas.exceptions import SerdeError
from inflow.schemas.plain import plain_schema, read_plain
from inflow.schemas.serde import AvroSerde

log = logging.getLogger(__name__)
RECORD = "EnrichedEvent"
Decoder = Callable[[bytes, int], dict[str, Any]]
# Fields the sink never reads: checked and stepped over, not decoded (not in the records read here).
UNUSED = frozenset({"platform", "received_at", "ingested_at"})
VARINT = re.compile(rb"[\x80-\xff]{0,9}[\x00-\x7f]", re.DOTALL).match


class EnrichedEventReader:
    """``read(bytes) -> dict`` with the fast path for the current schema."""

    def __init__(self, serde: AvroSerde) -> None:
        entry = serde.catalog.get(RECORD)
        self._plain = plain_schema(entry.schema)
        self._header = entry.header
        self._header_size = len(entry.header)
        self._serde = serde
        self._fast = compiled_decoder(entry.schema, self._plain, UNUSED)

    def read(self, data: bytes) -> dict[str, Any]:
        if data[: self._header_size] != self._header:
            return self._serde.decode(data, RECORD)[1]
        if self._fast is not None:
            try:
                return self._fast(data, self._header_size)
            except SerdeError:
                raise
            except Exception as exc:  # IndexError, UnicodeDecodeError, ValueError... as in read_plain
                raise SerdeError(f"cannot decode {RECORD}: {type(exc).__name__}: {exc}") from exc
        return read_plain(data, self._header_size, self._plain, RECORD)


# --- the compiled decoder ---------------------------------------------------------------------------------
def _varint(var: str, indent: str) -> list[str]:
    """Lines reading the zig-zag varint at ``p`` into ``var`` (one-byte values inline)."""
    return [
        f"{indent}b = data[p]",
        f"{indent}if b < 0x80:",
        f"{indent}    {var} = (b >> 1) ^ -(b & 1)",
        f"{indent}    p += 1",
        f"{indent}else:",
        f"{indent}    {var}, p = read_long(data, p)",
    ]


def _string(target: str, indent: str) -> list[str]:
    return [
        *_varint("n", indent),
        f"{indent}e = p + n",
        f"{indent}if n < 0 or e > size:",
        f"{indent}    raise SerdeError(f'cannot decode {RECORD}: string of {{n}} bytes at {{p}} past the end')",  # noqa: E501
        f"{indent}{target} = data[p:e].decode()",
        f"{indent}p = e",
    ]


def _kind(field_type: Any) -> str | None:
    """string, long or nullable-string; timestamp-millis counts as long (read as epoch milliseconds)."""
    if field_type in ("string", "long"):
        return str(field_type)
    if isinstance(field_type, dict) and field_type.get("type") == "long":
        return "long" if field_type.get("logicalType") in (None, "timestamp-millis") else None
    if field_type == ["null", "string"]:
        return "nullable"
    return None


def _long(var: str, indent: str) -> list[str]:
    """Lines reading the zig-zag varint at ``p`` into ``var``, unrolled (no loop, no call): an epoch
    second or millisecond is 5 or 6 bytes."""
    lines = [f"{indent}b = data[p]", f"{indent}v = b & 0x7F", f"{indent}p += 1"]
    inner = indent
    for shift in range(7, 70, 7):
        lines += [
            f"{inner}if b & 0x80:",
            f"{inner}    b = data[p]",
            f"{inner}    v |= (b & 0x7F) << {shift}",
            f"{inner}    p += 1",
        ]
        inner += "    "
    lines += [
        f"{inner}if b & 0x80:",
        f"{inner}    raise SerdeError('cannot decode {RECORD}: varint longer than a 64-bit long')",
        f"{indent}{var} = (v >> 1) ^ -(v & 1)",
    ]
    return lines


def _skip_long(indent: str) -> list[str]:
    """Lines stepping over the varint at ``p`` without computing it (one regex match)."""
    return [
        f"{indent}m = VARINT(data, p)",
        f"{indent}if m is None:",
        f"{indent}    raise SerdeError(f'cannot decode {RECORD}: data ends inside a varint at {{p}}')",
        f"{indent}p = m.end()",
    ]


def decoder_source(schema: dict[str, Any], skipped: frozenset[str] = frozenset()) -> str | None:
    """Python source of ``decode(data, p) -> dict`` for the record schema, or None for a field it does
    not know. Fields named in ``skipped`` are stepped over (long) or bounds-checked (string) and left out
    of the dict."""
    lines = ["def decode(data, p):", "    size = len(data)"]
    names = []
    for index, field in enumerate(schema["fields"]):
        kind = _kind(field["type"])
        if kind is None:
            return None
        var = f"f{index}"
        if field["name"] in skipped:
            if kind == "long":
                lines += _skip_long("    ")
                continue
            var = "_"
        else:
            names.append((field["name"], var))
        if kind == "string":
            lines += _string(var, "    ")
        elif kind == "long":
            lines += _long(var, "    ")
        else:
            lines += [
                "    b = data[p]",
                "    p += 1",
                "    if b == 0:",
                f"        {var} = None",
                "    elif b == 2:",
                *_string(var, "        "),
                "    else:",
                f"        raise SerdeError(f'cannot decode {RECORD}: union index byte {{b}} at {{p - 1}}')",
            ]
    lines += [
        "    if p != size:",
        f"        raise SerdeError(f'cannot decode {RECORD}: {{size - p}} trailing bytes after the record')",
        "    return {" + ", ".join(f"{name!r}: {var}" for name, var in names) + "}",
    ]
    return "\n".join(lines) + "\n"


def _samples(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Records exercising every field: short and long strings, non-ASCII text, both union branches, small,
    large and negative longs."""
    out = []
    for round_ in range(3):
        record: dict[str, Any] = {}
        for index, field in enumerate(schema["fields"]):
            kind = _kind(field["type"])
            if kind == "long":
                record[field["name"]] = (1_796_300_444_029, -3, 63)[round_] + index
            elif kind == "nullable" and round_ == 1:
                record[field["name"]] = None
            else:
                record[field["name"]] = ("é" * (index + 1), "x" * (70 + index), "")[round_]
        out.append(record)
    return out


def compiled_decoder(
    schema: dict[str, Any], plain: Any, skipped: frozenset[str] = frozenset()
) -> Decoder | None:
    """The compiled decoder of the record schema, when it knows every field and reads sample records as
    fastavro does (with ``plain``, the schema of :func:`plain_schema`; ``skipped`` fields left out);
    None otherwise."""
    source = decoder_source(schema, skipped)
    if source is None:
        return None
    scope: dict[str, Any] = {"read_long": read_long, "SerdeError": SerdeError, "VARINT": VARINT}
    exec(compile(source, f"<{RECORD} decoder>", "exec"), scope)  # noqa: S102 - source built above
    decode: Decoder = scope["decode"]
    from io import BytesIO

    for record in _samples(schema):
        buffer = BytesIO()
        schemaless_writer(buffer, plain, record)
        data = b"HD" + buffer.getvalue()
        try:
            expected = read_plain(data, 2, plain, RECORD)
            same = decode(data, 2) == {k: v for k, v in expected.items() if k not in skipped}
        except Exception:  # noqa: BLE001 - any disagreement means the fastavro path is used
            same = False
        if not same:
            log.warning("%s: compiled decoder disagrees with fastavro; using fastavro", RECORD)
            return None
    return decode
