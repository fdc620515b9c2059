"""Packs: the records one request says about one user, sent to ``ingest.records`` as one message.

A Bulk request's records of one user share their key (``W:<customer_id>``) and so their partition; sending
them as one :file:`IngestPack.avsc` message keeps their order (the pack's order is the request's) and saves
the per-message cost of the broker, the consumer fetch and the framing, which dominated the worker's profile
when each record was a message of its own. Each item is a whole framed record, so a pack is read item by
item: each keeps its own schema version, a bad one is rejected alone, and one can be forwarded unchanged.

A pack never exceeds the topic's limit: :func:`pack_messages` splits a key's records into as many packs as
needed, and a pack of one record is sent as that record (the single-record messages stay readable and are
still what one-element requests produce).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from inflow.schemas.avro_template import _END, long_bytes
from inflow.schemas.serde import AvroSerde

PACK_RECORD = "IngestPack"
Message = tuple[str, bytes, bytes]  # topic, key, value


class PackEncoder:
    """Encodes packs with the configured framing (the bytes are fastavro's: one array block of bytes)."""

    def __init__(self, serde: AvroSerde, topic: str | None = None) -> None:
        empty = serde.encoder(PACK_RECORD, topic=topic)({"records": []})
        self.header = empty[:-1]  # an empty array is one 0 byte after the header

    def size(self, values: Sequence[bytes]) -> int:
        """The encoded size of a pack of ``values``."""
        return len(self.header) + len(long_bytes(len(values))) + 1 + sum(item_size(v) for v in values)

    def encode(self, values: Sequence[bytes]) -> bytes:
        parts = [self.header, long_bytes(len(values))]
        for value in values:
            parts += (long_bytes(len(value)), value)
        parts.append(b"\x00")
        return b"".join(parts)

    def chunks(self, values: Sequence[bytes], room: int) -> list[bytes]:
        """``values`` in order as packs of at most ``room`` bytes each; a lone record stays as it is (also
        one larger than ``room``: the producer's size check rejects it with its own reason)."""
        out: list[bytes] = []
        header, fixed = self.header, len(self.header) + 1  # header and the end of the array
        parts = [header, b""]  # header, item count, then each item's length and bytes
        size = fixed
        for value in values:
            n = len(value)
            prefix = _END[n << 1] if n < 0x2000 else long_bytes(n)
            grow = len(prefix) + n
            count = (len(parts) - 2) >> 1
            if count and size + grow + _count_size(count + 1) > room:
                out.append(_finish(parts, count))
                parts, size = [header, b""], fixed
            parts += (prefix, value)
            size += grow
        if len(parts) > 2:
            out.append(_finish(parts, (len(parts) - 2) >> 1))
        return out


def _finish(parts: list[bytes], count: int) -> bytes:
    """The pack of ``parts`` (header, a slot for the count, items); a lone record as it is."""
    if count == 1:
        return parts[3]
    parts[1] = long_bytes(count)
    parts.append(b"\x00")
    return b"".join(parts)


def _count_size(count: int) -> int:
    """The length of the varint of a (non-negative) item count."""
    return 1 if count < 64 else 2 if count < 8192 else len(long_bytes(count))


def item_size(value: bytes) -> int:
    return len(long_bytes(len(value))) + len(value)


def pack_messages(
    messages: Sequence[Message], encoder: PackEncoder, limit: Callable[[str], int], packed: str
) -> list[Message]:
    """Messages to topic ``packed`` grouped by key into packs (each key's in their order, keys in the
    order they first appear), each within ``limit(topic)`` bytes of key and value; other topics' as they
    are."""
    groups: dict[bytes, list[bytes]] = {}
    out: list[Message] = []
    for topic, key, value in messages:
        if topic == packed:
            groups.setdefault(key, []).append(value)
        else:
            out.append((topic, key, value))
    return out + pack_groups(groups, encoder, limit(packed), packed) if groups else out


def pack_groups(
    groups: Mapping[bytes, Sequence[bytes]], encoder: PackEncoder, limit: int, packed: str
) -> list[Message]:
    """Each key's records (in their order, keys in the mapping's order) as packs to topic ``packed``, each
    within ``limit`` bytes of key and value."""
    out: list[Message] = []
    for key, values in groups.items():
        if len(values) == 1:
            out.append((packed, key, values[0]))
        else:
            out += [(packed, key, pack) for pack in encoder.chunks(values, limit - len(key))]
    return out


def unpack(serde: AvroSerde, value: bytes) -> list[bytes]:
    """The framed records of a message of ``ingest.records``: a pack's items, or the record itself."""
    name, record = serde.decode(value)
    return list(record["records"]) if name == PACK_RECORD else [value]
