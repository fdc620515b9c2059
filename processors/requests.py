"""Requests about users rather than data: Merge User, Delete User (erasure) and Device opt-out.

The gateway writes one record per user (``MergeRequest``, ``DeleteRequest``, ``DeviceOptOut``,
``producers/bulk_api/management.py``) to ``ingest.records`` keyed by the user's route, so a request is
ordered with that user's other records and reaches the partition of its identifier like any record
(:meth:`LaneProcessor.process <inflow.processors.engine.LaneProcessor.process>` resolves and forwards it).

- **Merge User** arrives at the merged user's partition. When the retained user's identity entry is on
  another partition, a MERGE message asks there; the two users then merge through the ordinary SHIP/CARRY
  path (data at the smaller slot) with ``retain`` naming the retained user's slot, so the uid kept is the
  one the request names, not MoEngage's automatic choice. Replays find the users merged already and do
  nothing. An unknown user is a rejection with the reason.
- **Delete User** erases the user where its profile lives: its index entries are deleted (those on other
  partitions by RELEASE, which deletes an entry only while it still names the erased user), its devices
  and their device-index entries removed, its profile replaced by an *erased* marker that keeps only the
  slot's generation (the next user made at the slot gets another uid), and its profile (and the snapshots
  of users merged into it) tombstoned on the compacted profiles topic. The request id and outcome are
  recorded in ``control.audit`` (action ``user.delete``), a refused request also in
  ``processors.rejected``.
- **Device opt-out** sets ``moe_push_opted`` (false on ``block``, true on ``unblock``) and ``opted_out`` on
  the named devices of the user's device book; identifiers that match no device of the user are rejected
  with the reason, the others applied.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Protocol

from inflow.processors import keys, protocol
from inflow.processors.exceptions import Rejection
from inflow.processors.identity import distinct
from inflow.processors.outputs import AUDIT, PROFILES, Output
from inflow.processors.routing import identifier_route
from inflow.processors.state import State
from inflow.processors.workspaces import CUSTOMER_ID, IdentityRules, IdentityRulesDirectory


class LaneProcessor(Protocol):
    """What the requests use of :class:`~inflow.processors.engine.LaneProcessor` (which calls them)."""

    state: State
    directory: IdentityRulesDirectory
    duplicates: int

    def clock(self) -> int: ...
    def local(self, route: str) -> bool: ...
    def _message(self, kind: str, header: dict[str, Any], route: str, payload: bytes = b"") -> Output: ...
    def _follow(self, ws: str, slot: str | None) -> str | None: ...
    def _profile(self, ws: str, slot: str) -> dict[str, Any]: ...
    def _snapshot(self, ws: str, profile: dict[str, Any], save: bool = True) -> Output: ...
    def _rejection(self, record_name: str, record: dict[str, Any], exc: Rejection) -> Output: ...
    def _unindex_device(
        self, ws: str, device: dict[str, Any], keep: tuple[str, str] | None = None
    ) -> None: ...
    def _merge_here(
        self,
        ws: str,
        rules: IdentityRules,
        profiles: list[dict[str, Any]],
        carried_devices: dict[str, Any],
        at: int,
        retain: str | None = None,
    ) -> list[Output]: ...


RECORDS = frozenset({"MergeRequest", "DeleteRequest", "DeviceOptOut"})
DELETE_ACTION = "user.delete"
AUDIT_ACTOR = "data-api"
# device_identifiers names -> the device field they match
DEVICE_FIELDS = {
    "unique_id": "device_id",
    "device_unique_id": "device_id",
    "push_id": "push_id",
    "moe_gaid": "moe_gaid",
}


def is_erased(stored: Any) -> bool:
    """A slot whose user was deleted: ``{"erased": generation, "uid": uid, ...}``."""
    return isinstance(stored, dict) and "erased" in stored


def identifiers(record_name: str, record: dict[str, Any], rules: IdentityRules) -> list[tuple[str, str]]:
    """The one identifier that names the request's user (its record is keyed by it)."""
    if record_name == "MergeRequest":
        pair = (CUSTOMER_ID, record.get("merged_user"))
    elif record_name == "DeleteRequest":
        pair = (CUSTOMER_ID, record.get("customer_id"))
    else:
        pair = (str(record.get("user_identifier_type") or ""), record.get("user_identifier_value"))
        if pair[0] not in rules.identifiers:
            raise Rejection(
                f"user_identifier_type {pair[0]!r} is not an identifier of the workspace "
                f"({', '.join(rules.identifiers)})"
            )
    name, value = pair
    if not isinstance(value, str) or not value.strip():
        raise Rejection(f"the {record_name} names no {name} value")
    return [(name, value)]


# -- Merge User ------------------------------------------------------------------------------------------


def merge_request(p: LaneProcessor, ws: str, record: dict[str, Any], slot: str | None) -> list[Output]:
    """At the merged user's home: merge it into the retained user (here, or by MERGE at its entry)."""
    merged, retained = record["merged_user"], record["retained_user"]
    if slot is None:
        raise Rejection(f"merged_user {merged!r} is not a known user")
    route = identifier_route(ws, CUSTOMER_ID, retained)
    if not p.local(route):
        header = {"ws": ws, "value": retained, "slot": slot, "request": _copy(record)}
        return [p._message(protocol.MERGE, header, route)]
    target = p._follow(ws, p.state.identity.get(keys.identity_key(ws, CUSTOMER_ID, retained)))
    if target is None:
        raise Rejection(f"retained_user {retained!r} is not a known user")
    return _merge_into(p, ws, slot, target, _ms(record["received_at"]))


def on_merge_request(p: LaneProcessor, h: dict[str, Any]) -> list[Output]:
    """At the retained user's identity entry: the two users merge, or the request is rejected."""
    ws, request = h["ws"], h["request"]
    try:
        target = p._follow(ws, p.state.identity.get(keys.identity_key(ws, CUSTOMER_ID, h["value"])))
        if target is None:
            raise Rejection(f"retained_user {h['value']!r} is not a known user")
        return _merge_into(p, ws, h["slot"], target, int(request["received_at"]))
    except Rejection as exc:
        p.state.discard()
        return [p._rejection("MergeRequest", request, exc)]


def _merge_into(p: LaneProcessor, ws: str, merged: str, retained: str, at: int) -> list[Output]:
    """Merge the user of slot ``merged`` into that of slot ``retained`` (pointers followed here)."""
    if p.local(merged):
        followed = p._follow(ws, merged)
        if followed is None:
            raise Rejection("merged_user was deleted")
        merged = followed
    if merged == retained:
        return []  # one user already (merged before, or a replay)
    if p.local(merged) and p.local(retained):
        profiles = [p._profile(ws, retained), p._profile(ws, merged)]
        return p._merge_here(ws, p.directory.rules(ws), profiles, {}, at, retain=retained)
    lo, hi = min(merged, retained), max(merged, retained)
    return [p._message(protocol.SHIP, {"ws": ws, "hi": hi, "lo": lo, "retain": retained}, hi)]


# -- Delete User -----------------------------------------------------------------------------------------


def delete_request(p: LaneProcessor, ws: str, record: dict[str, Any], slot: str | None) -> list[Output]:
    """At the user's home: erase it (see the module docstring); audited either way."""
    customer_id = record["customer_id"]
    if slot is None:
        marker = p.state.users.get(keys.user_key(ws, identifier_route(ws, CUSTOMER_ID, customer_id)))
        if is_erased(marker) and marker.get("event_uuid") == record["event_uuid"]:
            # This very request, applied again (a replay after a crash): its outputs again.
            return _erased_outputs(p, ws, record, marker)
        reason = f"no user has customer_id {customer_id!r}"
        return [
            p._rejection("DeleteRequest", record, Rejection(reason)),
            _audit(p, record, "rejected", reason),
        ]
    profile = p._profile(ws, slot)
    slots = distinct([slot, *profile.get("absorbed", [])])
    outputs: list[Output] = []
    for name, value in profile["aliases"]:
        route = identifier_route(ws, name, value)
        if p.local(route):
            key = keys.identity_key(ws, name, value)
            if p.state.identity.get(key) in slots:
                p.state.identity.delete(key)
        else:
            header = {"ws": ws, "name": name, "value": value, "slots": slots}
            outputs.append(p._message(protocol.RELEASE, header, route))
    book = p.state.devices.get(keys.user_key(ws, slot)) or {}
    for device in book.values():
        p._unindex_device(ws, device)
    p.state.devices.delete(keys.user_key(ws, slot))
    marker = {
        "erased": int(profile.get("generation", 0)),
        "generation": int(profile.get("generation", 0)),
        "uid": profile["uid"],
        "merged_uids": profile["merged_uids"],
        "identifiers": len(profile["aliases"]),
        "devices": len(book),
        "event_uuid": record["event_uuid"],
    }
    p.state.users.put(keys.user_key(ws, slot), marker)
    return outputs + _erased_outputs(p, ws, record, marker)


def erased_again(
    p: LaneProcessor,
    ws: str,
    record_name: str,
    record: dict[str, Any],
    slot: str,
    position: list[int] | None,
) -> list[Output] | None:
    """A Delete User request that finds the user it erased itself (forwarded to the erased slot again):
    applied again at its position (a replay after a crash), the same tombstones and audit record again;
    a copy at another position is a duplicate and does nothing. None: not such a request."""
    if record_name != "DeleteRequest" or not p.local(slot):
        return None
    marker = p.state.users.get(keys.user_key(ws, slot))
    if not is_erased(marker) or marker.get("event_uuid") != record["event_uuid"]:
        return None
    marked = p.state.seen.get(keys.seen_key(ws, slot, record["event_uuid"]))
    if marked is not None and (position is None or marked != position):
        p.duplicates += 1
        return []
    return _erased_outputs(p, ws, record, marker)


def _erased_outputs(
    p: LaneProcessor, ws: str, record: dict[str, Any], marker: dict[str, Any]
) -> list[Output]:
    """The erased user's profile and those merged into it tombstoned; the audit record."""
    uids = [marker["uid"], *marker["merged_uids"]]
    outputs = [
        Output(PROFILES, keys.topic_key(ws, uid), "UserProfile", {"workspace_id": ws}, tombstone=True)
        for uid in uids
    ]
    detail = {
        "customer_id": record["customer_id"],
        "uid": marker["uid"],
        "merged_uids": marker["merged_uids"],
        "identifiers_freed": marker["identifiers"],
        "devices_removed": marker["devices"],
        "event_uuid": record["event_uuid"],
    }
    return [*outputs, _audit(p, record, "ok", detail=detail)]


def on_release(p: LaneProcessor, h: dict[str, Any]) -> list[Output]:
    """At an erased user's identifier: the entry is deleted if it still names the erased user."""
    key = keys.identity_key(h["ws"], h["name"], h["value"])
    if p.state.identity.get(key) in h["slots"]:
        p.state.identity.delete(key)
    return []


def _audit(
    p: LaneProcessor, record: dict[str, Any], outcome: str, reason: str | None = None, detail: Any = None
) -> Output:
    """The ``control.audit`` record of a Delete User request: who asked (the Data API), whom, how it ended."""
    target = f"{record['workspace_id']}:{record['customer_id']}"
    value = {
        "at": p.clock(),
        "actor": AUDIT_ACTOR,
        "role": "workspace",
        "action": DELETE_ACTION,
        "target": target,
        "outcome": outcome,
        "detail_json": json.dumps(detail if reason is None else {"reason": reason}),
        "request_id": record.get("request_id"),
    }
    return Output(AUDIT, target.encode("utf-8", "surrogatepass"), "AuditRecord", value)


# -- Device opt-out --------------------------------------------------------------------------------------


def device_opt_out(p: LaneProcessor, ws: str, record: dict[str, Any], slot: str | None) -> list[Output]:
    """Block or unblock the named devices of the user; names that match none of its devices are rejected."""
    kind, value = record["user_identifier_type"], record["user_identifier_value"]
    if slot is None:
        raise Rejection(f"no user has {kind} {value!r}")
    try:
        items = json.loads(record.get("device_identifiers_json") or "[]")
    except ValueError as exc:
        raise Rejection(f"device_identifiers_json is not valid JSON: {exc}") from exc
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) and i for i in items):
        raise Rejection("device_identifiers_json must be a non-empty JSON array of objects")
    book = dict(p.state.devices.get(keys.user_key(ws, slot)) or {})
    found: list[str] = []
    unmatched: list[dict[str, Any]] = []
    for item in items:
        unknown = sorted(set(item) - set(DEVICE_FIELDS))
        if unknown:
            raise Rejection(f"unknown device identifier {unknown[0]!r}; known: {', '.join(DEVICE_FIELDS)}")
        matches = [
            device_id
            for device_id, device in book.items()
            if all(str(device.get(DEVICE_FIELDS[name], "")) == str(text) for name, text in item.items())
        ]
        if matches:
            found += matches
        else:
            unmatched.append(item)
    if not found:
        raise Rejection(f"no device of the user matches {json.dumps(unmatched)}")
    block = record["action_type"] == "block"
    received = _ms(record["received_at"])
    for device_id in distinct(found):
        book[device_id] = book[device_id] | {
            "moe_push_opted": not block,
            "opted_out": block,
            "updated_at": received,
        }
    p.state.devices.put(keys.user_key(ws, slot), book)
    outputs = [p._snapshot(ws, p._profile(ws, slot))]
    if unmatched:
        reason = f"no device of the user matches {json.dumps(unmatched)}; the other devices were applied"
        outputs.append(p._rejection("DeviceOptOut", record, Rejection(reason)))
    return outputs


def _ms(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


def _copy(record: dict[str, Any]) -> dict[str, Any]:
    """The request as a protocol header can carry it (JSON: times as epoch ms)."""
    return {k: _ms(v) if isinstance(v, datetime) else v for k, v in record.items()}
