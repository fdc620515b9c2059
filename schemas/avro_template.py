"""Avro encoders that encode constant fields once and splice in only the fields that vary per record.

Avro's binary encoding of a record is the concatenation of its fields' encodings, so a record whose
fields are partly fixed (for a whole import file, or for every record of one HTTP request) can be written
as constant byte runs with the per-record fields' encodings in between: the bytes are exactly fastavro's.

Two shapes, both built from the schema at run time and checked against fastavro on a sample record; when
a field type is not one they know, or the bytes differ, fastavro's encoder is used instead:

* :func:`template_encoder` - a ``record dict -> bytes`` encoder for records whose ``constants`` never
  change (the S3 importer, one per file);
* :class:`SplicedRecord` - fields split into *bound* ones (fixed per batch, e.g. workspace, request id,
  receive time) and *varying* ones; :meth:`SplicedRecord.bind` encodes the bound fields once and returns
  a compiled ``encode(*, field=value, ...) -> bytes`` that takes each varying field by its name (the
  gateway, one bind per request). A call that misses a field or names one the record does not vary is a
  ``TypeError``, as for any Python function.

Field values are the plain ones (``None`` or the branch value for ``["null", T]`` unions, epoch
milliseconds or an aware ``datetime`` for ``timestamp-millis``); fastavro accepts the same values.
"""

from __future__ import annotations

import io
import keyword
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from fastavro import schemaless_writer

from inflow.schemas.serde import AvroSerde, Encoder

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FieldEncoder = Callable[[Any], bytes]


def _long_slow(n: int) -> bytes:
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Varints 14 bits at a time: the last 1-2 bytes of a varint, and 2 continued bytes.
_END = tuple(_long_slow(c) for c in range(0x4000))
_PAIR = tuple(bytes(((c & 0x7F) | 0x80, (c >> 7) | 0x80)) for c in range(0x4000))
# A ["null", "string"] union's branch byte and a string length under 0x2000, indexed by the length.
_END_NULLABLE = tuple(b"\x02" + _END[n << 1] for n in range(0x2000))
# Integer encodings one batch encoder keeps (SplicedRecord.bind): bounded for a long-lived encoder.
MEMO_SIZE = 4096


def read_long(data: bytes, pos: int) -> tuple[int, int]:
    """The zig-zag varint at ``pos`` (Avro int and long): (value, position after it); ValueError when the
    data ends inside it or it is longer than a 64-bit long."""
    shift = result = 0
    while True:
        if pos >= len(data):
            raise ValueError("data ends inside a varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than a 64-bit long")


def long_bytes(n: int) -> bytes:
    """Zig-zag varint, as Avro writes int and long; OverflowError outside the 64-bit range."""
    n = (n << 1) ^ (n >> 63)
    if 0 <= n < 0x4000:
        return _END[n]
    if 0x4000 <= n < 0x10000000:
        return _PAIR[n & 0x3FFF] + _END[n >> 14]
    if 0x10000000 <= n < 0x40000000000:  # e.g. epoch milliseconds
        return _PAIR[n & 0x3FFF] + _PAIR[(n >> 14) & 0x3FFF] + _END[n >> 28]
    if n < 0 or n >> 64:
        raise OverflowError("int too big to encode as an Avro long")
    return _long_slow(n)


def string_bytes(value: str) -> bytes:
    data = value.encode()
    n = len(data)
    return (_END[n << 1] if n < 0x2000 else long_bytes(n)) + data


def _timestamp_millis(value: datetime | int) -> bytes:
    if isinstance(value, int):
        return long_bytes(value)
    delta = value - _EPOCH  # as fastavro: whole milliseconds of the difference to the epoch
    return long_bytes((delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000)


def _string_map(value: Mapping[str, str]) -> bytes:
    if not value:
        return b"\x00"
    parts = [long_bytes(len(value))]
    for k, v in value.items():
        parts.append(string_bytes(k))
        parts.append(string_bytes(v))
    parts.append(b"\x00")
    return b"".join(parts)


def _string_array(value: Sequence[str]) -> bytes:
    """An array of strings as one block (what fastavro writes); a value that is not a list or tuple is
    refused (a string would otherwise be taken as its characters)."""
    if not isinstance(value, list | tuple):
        raise TypeError(f"an array of strings, not {type(value).__name__}")
    if not value:
        return b"\x00"
    return b"".join([long_bytes(len(value)), *(string_bytes(v) for v in value), b"\x00"])


def _boolean(value: Any) -> bytes:
    return b"\x01" if value else b"\x00"


def _nullable(inner: FieldEncoder) -> FieldEncoder:
    def encode(value: Any) -> bytes:
        return b"\x00" if value is None else b"\x02" + inner(value)

    encode.inner = inner  # type: ignore[attr-defined]  # lets _compile inline the branch
    return encode


def _field_encoder(schema: Any) -> FieldEncoder | None:
    """An encoder for the common field types (string, int/long, boolean, timestamp-millis, string map,
    string array and ``["null", one of those]``); None for anything else."""
    if schema == "string":
        return string_bytes
    if schema in ("long", "int"):
        return long_bytes
    if schema == "boolean":
        return _boolean
    if isinstance(schema, dict):
        if schema.get("type") == "long" and schema.get("logicalType") == "timestamp-millis":
            return _timestamp_millis
        if schema.get("type") == "map" and schema.get("values") == "string":
            return _string_map
        if schema.get("type") == "array" and schema.get("items") == "string":
            return _string_array
    if isinstance(schema, list) and len(schema) == 2 and schema[0] == "null":
        inner = _field_encoder(schema[1])
        return _nullable(inner) if inner else None
    return None


def _constant(schema: Any, value: Any) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, schema, value)
    return buffer.getvalue()


def _header(serde: AvroSerde, encoded: bytes) -> bytes:
    return encoded[: 5 if serde.framing == "confluent" else 10]


def template_encoder(
    serde: AvroSerde, record_name: str, topic: str, constants: Mapping[str, Any], sample: Mapping[str, Any]
) -> Encoder:
    """An encoder for records whose ``constants`` fields never change; fastavro's when it cannot be one."""
    plain = serde.encoder(record_name, topic=topic)
    expected = plain(sample)
    consts: list[bytes] = [_header(serde, expected)]  # constant bytes before, between, after varying fields
    varying: list[tuple[str, FieldEncoder]] = []
    for field in serde.catalog.get(record_name).parsed["fields"]:
        name, schema = field["name"], field["type"]
        if name in constants or (name not in sample and "default" in field):
            consts[-1] += _constant(schema, constants[name] if name in constants else field["default"])
            continue
        encoder = _field_encoder(schema)
        if encoder is None:
            return plain
        varying.append((name, encoder))
        consts.append(b"")
    first, steps = (
        consts[0],
        tuple((name, fn, const) for (name, fn), const in zip(varying, consts[1:], strict=True)),
    )

    def encode(record: Mapping[str, Any]) -> bytes:
        out = [first]
        for name, fn, const in steps:
            out.append(fn(record[name]))
            out.append(const)
        return b"".join(out)

    try:
        same = encode(sample) == expected
    except (KeyError, TypeError, AttributeError, ValueError):
        same = False
    return encode if same else plain


class SplicedRecord:
    """One record type split into per-batch ``bound`` fields and per-record ``varying`` fields.

    Every other field of the schema must have a default, which is what it is written with. ``fast`` is
    False when the schema has a field type this module does not encode, a field name that cannot be a
    Python parameter, or the sample's bytes differed from fastavro's; :meth:`bind` then returns an encoder
    that goes through fastavro (with the same keyword arguments).
    """

    def __init__(
        self,
        serde: AvroSerde,
        record_name: str,
        topic: str | None,
        bound: Sequence[str],
        varying: Sequence[str],
        sample: Mapping[str, Any],
        repeated: Sequence[str] = (),
    ) -> None:
        """``repeated``: string fields whose values repeat within a batch (a user id, an event name): each
        bound encoder remembers their encodings."""
        self.record_name = record_name
        self.bound = tuple(bound)
        self.varying = tuple(varying)
        self._bound_names = frozenset(self.bound)
        self._varying_names = frozenset(self.varying)
        self.plain = serde.encoder(record_name, topic=topic)
        fields = serde.catalog.get(record_name).parsed["fields"]
        unknown = (set(bound) | set(varying)) - {f["name"] for f in fields}
        if unknown:
            raise ValueError(f"{record_name}: fields {sorted(unknown)} are not in the schema")
        rest = [f for f in fields if f["name"] not in self.bound and f["name"] not in self.varying]
        if any("default" not in f for f in rest):
            missing = sorted(f["name"] for f in rest if "default" not in f)
            raise ValueError(f"{record_name}: fields {missing} are neither given nor have a default")
        self.defaults = {f["name"]: f["default"] for f in rest}
        expected = self.plain(sample)
        # Layout: runs of constant parts (bytes, or the index of a bound field) between varying fields,
        # which follow each other in the schema's order.
        layout: list[list[bytes | int]] = [[_header(serde, expected)]]
        names: list[str] = []
        encoders: dict[str, FieldEncoder | None] = {}
        for field in fields:
            name, schema = field["name"], field["type"]
            encoders[name] = _field_encoder(schema)
            if name in self.defaults:
                layout[-1].append(_constant(schema, field["default"]))
            elif name in self.bound:
                layout[-1].append(self.bound.index(name))
            else:
                names.append(name)
                layout.append([])
        self._bound_encoders = tuple(encoders[n] for n in self.bound)
        self._layout = layout
        self._names = tuple(names)  # the varying fields in the schema's order
        self.order = self._names  # the order a bound encoder takes them in by position
        self._encoders = tuple(encoders[n] for n in names)
        self.fast = all(e is not None for e in encoders.values()) and all(map(_parameter_name, names))
        if self.fast:
            self._make = _compile(self._names, self._encoders, memo=True, repeated=frozenset(repeated))  # type: ignore[arg-type]
            try:
                encode = self.bind(**{n: sample[n] for n in self.bound})
                self.fast = encode(**{n: sample[n] for n in self.varying}) == expected
            except (KeyError, TypeError, AttributeError, ValueError):
                self.fast = False

    def bind(self, **bound: Any) -> Callable[..., bytes]:
        """The encoder of one batch: the ``bound`` fields by name, encoded once; the returned function
        takes the varying fields as keyword arguments."""
        runs = self.bound_runs(**bound)
        return self.plain_bound(**bound) if runs is None else self.encoder_of(runs)

    def encoder_of(self, runs: list[bytes]) -> Callable[..., bytes]:
        """:meth:`bind`'s encoder for the runs :meth:`bound_runs` gave."""
        return self._make(*runs)  # type: ignore[no-any-return]

    def bound_runs(self, **bound: Any) -> list[bytes] | None:
        """What :meth:`bind` splices between the varying fields (their order: :attr:`order`): the header and
        the bound and default fields' bytes, one run before each varying field and one after the last. A
        caller that has a varying field's Avro bytes already (copied from a record with the same field
        type) can join them itself. None when this record is not encoded here (``fast`` False)."""
        if bound.keys() != self._bound_names:
            raise TypeError(f"{self.record_name}: bind() takes {sorted(self.bound)}, not {sorted(bound)}")
        if not self.fast:
            return None
        encoded = [fn(bound[name]) for fn, name in zip(self._bound_encoders, self.bound, strict=True)]  # type: ignore[misc]
        return self._runs(encoded)

    def _runs(self, encoded: Sequence[bytes]) -> list[bytes]:
        return [b"".join(p if isinstance(p, bytes) else encoded[p] for p in run) for run in self._layout]

    def plain_bound(self, **bound: Any) -> Callable[..., bytes]:
        """The same encoder through fastavro (slow; for fallbacks and error messages)."""
        if bound.keys() != self._bound_names:
            raise TypeError(f"{self.record_name}: bind() takes {sorted(self.bound)}, not {sorted(bound)}")
        base = self.defaults | bound
        names, plain, record_name = self._varying_names, self.plain, self.record_name

        def encode(**values: Any) -> bytes:
            if values.keys() != names:
                raise TypeError(f"{record_name}: encode() takes {sorted(names)}, not {sorted(values)}")
            return plain(base | values)

        return encode


def _parameter_name(name: str) -> bool:
    """Whether a field name can be a parameter of the generated encoder (not a keyword, not one of its
    own ``__``-prefixed names)."""
    return name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("__")


def _compile(
    names: tuple[str, ...],
    encoders: tuple[FieldEncoder, ...],
    defaults: Mapping[str, Any] | None = None,
    memo: bool = False,
    repeated: frozenset[str] = frozenset(),
) -> Callable[..., Callable[..., bytes]]:
    """``make(*runs) -> encode``: one ``b"".join`` of the constant runs and the fields' encodings, with
    strings and union branches inlined (generated once per record type: no per-field loop, few calls).

    ``encode(name=value, ...)`` takes the fields ``names`` by name or in their order; with ``defaults``
    it is ``encode(record)`` and reads them from a mapping instead (a field in ``defaults`` may be absent).
    With ``memo`` each ``make`` call's encoder keeps the encodings of its integer (long, int,
    timestamp-millis) values in a dict of its own, at most ``MEMO_SIZE`` of them: the records of one
    batch (one HTTP request) mostly repeat their times and offsets; likewise those of the string fields
    named in ``repeated``.
    """
    namespace: dict[str, Any] = {
        "__E": _END,
        "__E2": _END_NULLABLE,
        "__l": long_bytes,
        "__s": string_bytes,
        "__MS": MEMO_SIZE,
    }
    parts: list[str] = []
    for i, (name, fn) in enumerate(zip(names, encoders, strict=True)):
        parts.append(f"__c{i}")
        inner = getattr(fn, "inner", None)
        namespace[f"__f{i}"] = inner or fn
        if memo and name in repeated and (fn is string_bytes or inner is string_bytes):
            if inner is None:
                parts.append(f"(__sg({name}) or __sm({name}))")
            else:
                parts.append(f"(b'\\x00' if {name} is None else (__ng({name}) or __nm({name})))")
            continue
        if inner is string_bytes:  # the union's branch byte and the length in one table lookup
            parts.append(
                f"(b'\\x00' if {name} is None else (__E2[__n] + __b if (__n := len(__b := {name}.encode()))"
                f" < 0x2000 else b'\\x02' + __l(__n) + __b))"
            )
            continue
        call = _inline(inner or fn, f"__f{i}", name, memo)
        parts.append(call if inner is None else f"(b'\\x00' if {name} is None else b'\\x02' + {call})")
    parts.append(f"__c{len(names)}")
    consts = ", ".join(f"__c{i}" for i in range(len(names) + 1))
    if defaults is None:
        head = f"    def encode({', '.join(names)}):\n"  # by name, or by position in the schema's order
    else:
        head = "    def encode(__r):\n"
        for i, name in enumerate(names):
            if name in defaults:
                namespace[f"__d{i}"] = defaults[name]
                head += f"        {name} = __r.get({name!r}, __d{i})\n"
            else:
                head += f"        {name} = __r[{name!r}]\n"
    memo_source = ""
    if memo:
        memo_source = "".join(
            f"    {d} = {{}}\n    {get} = {d}.get\n"
            f"    def {put}(v):\n"
            f"        if len({d}) >= __MS:\n            {d}.clear()\n"
            f"        b = {d}[v] = {how}\n        return b\n"
            for d, get, put, how in (
                ("__M", "__mg", "__m", "__l(v)"),
                ("__S", "__sg", "__sm", "__s(v)"),
                ("__N", "__ng", "__nm", "b'\\x02' + __s(v)"),
            )
        )
    source = (
        f"def make({consts}):\n{memo_source}{head}"
        f"        return b''.join(({', '.join(parts)},))\n    return encode\n"
    )
    exec(compile(source, "<spliced avro encoder>", "exec"), namespace)  # noqa: S102 - generated above
    return namespace["make"]  # type: ignore[no-any-return]


def _inline(fn: FieldEncoder, name: str, value: str, memo: bool = False) -> str:
    """The expression encoding ``value`` with ``fn`` (bound as ``name``), without a call where cheap."""
    if fn is string_bytes:  # string_bytes inlined (__b, __n: locals of the generated function)
        return f"(__E[__n << 1] + __b if (__n := len(__b := {value}.encode())) < 0x2000 else __l(__n) + __b)"
    # Only exact ints go through the memo: True and 1.0 hash like 1 but are not what fastavro takes as 1.
    long = f"(__mg({value}) or __m({value}))" if memo else f"__l({value})"
    if fn is long_bytes:
        return f"({long} if {value}.__class__ is int else __l({value}))" if memo else long
    if fn is _timestamp_millis:
        return f"({long} if {value}.__class__ is int else {name}({value}))"
    if fn is _string_map:
        return f"(__f_map({value}) if {value} else b'\\x00')".replace("__f_map", name)
    return f"{name}({value})"


_UNSUPPORTED = object()


def _sample_value(schema: Any) -> Any:
    """A value of a type :func:`_field_encoder` knows (to check the compiled encoder against fastavro)."""
    if schema == "string":
        return "sample \u00e9"
    if schema in ("long", "int"):
        return 300
    if schema == "boolean":
        return True
    if isinstance(schema, dict):
        if schema.get("type") == "long" and schema.get("logicalType") == "timestamp-millis":
            return 1_700_000_000_123
        if schema.get("type") == "map" and schema.get("values") == "string":
            return {"k": "v"}
        if schema.get("type") == "array" and schema.get("items") == "string":
            return ["a", "é"]
    if isinstance(schema, list) and len(schema) == 2 and schema[0] == "null":
        return _sample_value(schema[1])
    return _UNSUPPORTED


def record_encoder(serde: AvroSerde, record_name: str, topic: str | None = None) -> Encoder:
    """A ``record dict -> bytes`` encoder for a whole record: a :class:`SplicedRecord` with every field
    varying (compiled once, checked against fastavro) that reads the fields from the dict, those missing
    written with their schema default. A value the compiled code cannot take (wrong type, out of range, a
    required field missing) goes through fastavro's encoder, which raises
    :class:`~inflow.schemas.exceptions.SerdeError`; a schema with a field type this module does not encode
    gets fastavro's encoder outright."""
    plain = serde.encoder(record_name, topic=topic)
    fields = serde.catalog.get(record_name).parsed["fields"]
    sample = {field["name"]: _sample_value(field["type"]) for field in fields}
    if any(value is _UNSUPPORTED for value in sample.values()):
        return plain
    spliced = SplicedRecord(serde, record_name, topic, (), tuple(sample), sample)
    if not spliced.fast:
        return plain
    defaults = {field["name"]: field["default"] for field in fields if "default" in field}
    fast = _compile(spliced._names, spliced._encoders, defaults)(*spliced._runs(()))  # type: ignore[arg-type]

    def encode(record: Mapping[str, Any]) -> bytes:
        try:
            return fast(record)  # type: ignore[no-any-return]
        except (KeyError, AttributeError, TypeError, ValueError, OverflowError):
            return plain(record)

    return encode
