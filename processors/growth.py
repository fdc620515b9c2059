"""Growing ``ingest.records`` while the pipeline runs: each partition's state re-keyed into the new layout.

A key's partition is ``crc32(route) % partitions`` (:mod:`~inflow.processors.routing`), so adding
partitions moves keys. ``inflow topics grow ingest.records N`` grows the changelogs, writes the new layout
to ``control.layout`` (``{"partitions": N, "previous": M}``), then grows the topic. Then, on the log:

1. Every old partition ``p < M``, before it applies anything more, sends each stored key whose new home
   is another partition there (MOVE, packed writes), deletes it locally (a changelog tombstone), and sends
   MARK(p) to every partition. Its layout (a state key of its own) becomes N.
2. Every partition, old or new, applies nothing but MOVE and MARK until it holds the MARKs of all ``M``
   old partitions: then every key it must hold is there (a partition's MOVEs precede its MARK in the
   log). The records and protocol messages it read meanwhile wait in memory, in order, and are applied
   then; offsets are not committed past the first of them, so a crash reads them again.
3. A record a producer with stale metadata still writes to its old partition is forwarded to its new one,
   like any record whose user lives elsewhere.

Crash cases: a partition killed during its moves sends them again (its layout did not reach the
changelog); a receiver ignores MOVEs and MARKs of a partition whose MARK it already holds, so a late copy
never overwrites newer state. De-duplication survives the growth: seen marks are keyed by the user's slot
and move with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from inflow.processors import jsoncodec, keys, protocol
from inflow.processors.outputs import INGEST, PROTOCOL, Output
from inflow.processors.routing import identifier_route, partition_of
from inflow.processors.state import State
from inflow.processors.store import TABLES

META_PREFIX = b"\x00inflow\x00layout\x00"
MAX_MOVE_BYTES = 512 * 1024
IDENTITY, USERS, DEVICES, DEVICE_INDEX, SEEN = range(len(TABLES))
LayoutOf = Callable[[], dict[str, Any] | None]


def route_of(table: int, key: bytes, raw: bytes) -> str | None:
    """The route (identifier or slot) whose partition holds this state key; None for a meta key."""
    if key[:1] == b"\x00":
        return None
    parts = key.decode("utf-8", "surrogatepass").split(keys.SEP)
    if table == IDENTITY:
        # identity_key: ws, name, value; identity_count_key: ws, "", "merged", name, value
        ws, rest = parts[0], parts[1:]
        if rest[:2] == ["", "merged"]:
            rest = rest[2:]
        return identifier_route(ws, rest[0], keys.SEP.join(rest[1:]))
    if table in (USERS, DEVICES):  # user_key: ws, slot; fair_usage_key: ws, "", "fup", slot
        return keys.SEP.join(parts[3:] if parts[1:3] == ["", "fup"] else parts[1:])
    if table == DEVICE_INDEX:  # value: [slot, device_id]
        return str(jsoncodec.loads(raw)[0])
    return keys.SEP.join(parts[1:-1])  # seen_key: ws, slot, event_uuid


def meta_key(partition: int) -> bytes:
    """Where a partition keeps its layout (named by the partition: a worker's decode cache is shared by the
    partitions it owns, and every other state key lives in exactly one partition)."""
    return META_PREFIX + str(partition).encode()


def meta(state: State, partition: int) -> dict[str, Any] | None:
    stored = state.identity.get(meta_key(partition))
    return None if stored is None else dict(stored)


def waiting(state: State, partition: int) -> bool:
    """The partition waits for the MARKs of the old partitions before it applies records."""
    current = meta(state, partition)
    return current is not None and current.get("await") is not None


def check_layout(
    state: State, partition: int, partitions: int, layout: dict[str, Any] | None
) -> list[Output]:
    """At the start of each batch of a partition: record its layout, or move its state to a new one."""
    current = meta(state, partition)
    if current is None:
        if layout is not None and layout.get("partitions") == partitions and partition >= layout["previous"]:
            current = {"n": partitions, "await": layout["previous"], "marks": {}}  # born by a growth
        elif layout is not None and layout.get("partitions") == partitions:
            current = {"n": layout["previous"], "await": None, "marks": {}}  # old, never applied before
        else:
            current = {"n": partitions, "await": None, "marks": {}}
        state.identity.put(meta_key(partition), current)
    if current["n"] >= partitions:
        return []
    outputs = _moves(state, partition, partitions)
    outputs += [
        _message(protocol.MARK, {"epoch": partitions, "frm": partition, "old": current["n"]}, target)
        for target in range(partitions)
    ]
    # MARKs of this growth that arrived before this partition saw it are kept (marks are per epoch).
    marks = current.get("marks", {})
    done = set(range(current["n"])) <= set(marks.get(str(partitions), []))
    state.identity.put(
        meta_key(partition), {"n": partitions, "await": None if done else current["n"], "marks": marks}
    )
    return outputs


def _moves(state: State, partition: int, partitions: int) -> list[Output]:
    """MOVE messages for every key whose home under ``partitions`` is another partition; deleted here."""
    by_target: dict[int, list[tuple[int, bytes, bytes]]] = {}
    for index, table in enumerate(state.tables):
        for key, raw in _stored(table.backing):
            route = route_of(index, key, raw)
            if route is None:
                continue
            target = partition_of(route, partitions)
            if target != partition:
                by_target.setdefault(target, []).append((index, key, raw))
                table.delete(key)
    outputs = []
    for target, writes in sorted(by_target.items()):
        chunk: list[tuple[int, bytes, bytes]] = []
        size = 0
        for write in writes:
            if chunk and size + len(write[1]) + len(write[2]) > MAX_MOVE_BYTES:
                outputs.append(_move(partitions, partition, target, chunk))
                chunk, size = [], 0
            chunk.append(write)
            size += len(write[1]) + len(write[2]) + 9
        if chunk:
            outputs.append(_move(partitions, partition, target, chunk))
    return outputs


def _stored(backing: MutableMapping[Any, Any]) -> Iterator[tuple[bytes, bytes]]:
    for key in list(backing):
        raw = backing.get(key)
        if raw is not None:
            yield bytes(key), bytes(raw)


def _move(epoch: int, frm: int, target: int, writes: list[tuple[int, bytes, bytes]]) -> Output:
    data = protocol.encode(protocol.MOVE, {"epoch": epoch, "frm": frm}, protocol.pack_writes(writes))
    return Output(INGEST, b"", PROTOCOL, {"kind": protocol.MOVE}, partition=target, raw=data)


def _message(kind: str, header: dict[str, Any], target: int) -> Output:
    return Output(INGEST, b"", PROTOCOL, {"kind": kind}, partition=target, raw=protocol.encode(kind, header))


def on_move(state: State, partition: int, header: dict[str, Any], payload: bytes) -> bool:
    """Apply a MOVE; True when it brought profiles (the partition's identifier backfill must see them)."""
    current = meta(state, partition) or {}
    if header["frm"] in current.get("marks", {}).get(str(header["epoch"]), []):
        return False  # a copy sent again after a crash: this partition has all of it already
    profiles = False
    for index, key, raw in protocol.unpack_writes(payload):
        state.tables[index].put(key, jsoncodec.loads(raw))
        profiles = profiles or index == USERS
    return profiles


def on_mark(state: State, partition: int, header: dict[str, Any]) -> bool:
    """Record a MARK; True when it was the last one this partition waited for."""
    current = meta(state, partition) or {"n": header["epoch"], "await": header["old"], "marks": {}}
    epoch = str(header["epoch"])
    marks = dict(current.get("marks", {}))
    marks[epoch] = sorted(set(marks.get(epoch, [])) | {header["frm"]})
    awaited = current.get("await")
    done = (
        awaited is not None and current["n"] == header["epoch"] and set(range(awaited)) <= set(marks[epoch])
    )
    state.identity.put(meta_key(partition), current | {"marks": marks, "await": None if done else awaited})
    return done
