"""The lane: identity resolution, profiles, devices and event enrichment for the records of a workspace.

Why one lane per workspace: every record of a workspace reaches the same lane partition (the router
keys the lane topic by workspace id), and one lane partition is owned by exactly one worker at a time.
So the identity index, the profiles and the device books that a merge touches always live in one
partition, and a merge is a local, ordered step: later records of either identifier come after it in
the same partition and find the identifiers already pointing at the retained user. No cross-partition
protocol exists that could interleave. Scale-out is across workspaces (more lanes, more workers).

The processor is pure over :class:`~inflow.processors.state.State`; the lane stage in ``processors.lane``
feeds it, publishes its outputs, then writes the state.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from inflow.processors import jsoncodec, keys
from inflow.processors.attributes import (
    apply_platforms,
    apply_unset,
    apply_update,
    merge_attributes,
    parse_attributes,
    parse_update,
)
from inflow.processors.classification import UNSUPPORTED_CAMPAIGN_ATTRIBUTES, channel, event_name, event_type
from inflow.processors.devices import MAX_DEVICES_PER_USER, check_capacity, device_attributes, unique_values
from inflow.processors.exceptions import Rejection
from inflow.processors.identity import (
    MAX_USERS_PER_IDENTIFIER_VALUE,
    choose_retained,
    distinct,
    identifier_keys,
    record_identifiers,
)
from inflow.processors.outputs import EVENTS, PROFILES, REJECTED, Output
from inflow.processors.state import State
from inflow.processors.workspaces import ANONYMOUS_ID, CUSTOMER_ID, IdentityRules, IdentityRulesDirectory

MERGED_EVENT = "MOE_USER_MERGED"  # on the retained user
MERGE_EVENT = "MOE_USER_MERGE_EVENT"  # on the merged user
Profile = dict[str, Any]
# Events move last seen forward only by this much or more: one profile write per user and minute, not per
# event. User and device upserts set it exactly.
LAST_SEEN_RESOLUTION_MS = 60_000
WORKSPACE_DISABLED = "workspace disabled"


def now_ms() -> int:
    return int(time.time() * 1000)


def to_ms(value: Any) -> int:
    """Avro timestamp-millis values arrive as aware datetimes (fastavro) or epoch ms."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


class LaneProcessor:
    """Applies one ingest record to the lane state and returns what to publish."""

    def __init__(
        self,
        state: State,
        directory: IdentityRulesDirectory,
        clock: Callable[[], int] = now_ms,
        disabled: Callable[[str], bool] = lambda workspace_id: False,
    ) -> None:
        self.state = state
        self.directory = directory
        self.clock = clock
        self.disabled = disabled
        self.handlers = {"UserUpsert": self._user, "DeviceUpsert": self._device, "EventRecord": self._event}
        self.duplicates = 0

    def process(
        self, record_name: str, record: dict[str, Any], position: list[int] | None = None
    ) -> list[Output]:
        """De-duplicate on event_uuid, apply, and mark seen; a bad record becomes a rejection output.

        ``position`` is where the record sits in the lane (partition, offset, index in pack). The seen mark
        stores it: a record seen at another position is an upstream duplicate and is dropped, while the
        same message read again after a crash is applied again, because its outputs may have been lost
        with the crash even though its seen mark reached the changelog (the producer orders nothing
        across partitions). Re-applying is harmless: updates are idempotent and outputs carry event_uuid.
        """
        handler = self.handlers.get(record_name)
        ws, event_uuid = record.get("workspace_id"), record.get("event_uuid")
        if handler is None or not isinstance(ws, str) or not isinstance(event_uuid, str):
            return [self._rejection(record_name, record, Rejection(f"{record_name} is not an ingest record"))]
        if self.disabled(ws):
            # `inflow workspaces disable` stops the workspace everywhere: the gateway refuses its requests,
            # and what was accepted before (or comes from an import) is rejected here, its state untouched
            # (no seen mark either: a copy sent after the workspace is enabled again is applied).
            return [self._rejection(record_name, record, Rejection(WORKSPACE_DISABLED))]
        seen = keys.seen_key(ws, event_uuid)
        marked = self.state.seen.get(seen)
        if marked is not None and (position is None or marked != position):
            self.duplicates += 1
            return []
        try:
            outputs = handler(ws, record)
        except Rejection as exc:
            self.state.discard()
            outputs = [self._rejection(record_name, record, exc)]
        self.state.seen.put(seen, position or 1)
        return outputs

    def reject(
        self, record_name: str, record: dict[str, Any], position: list[int] | None, reason: str
    ) -> Output:
        """Undo what :meth:`process` just did for a record that cannot be published (its profile or event
        would be over a topic's size limit): its state changes are dropped, it stays marked seen so a copy
        is a duplicate, and its rejection names the reason."""
        self.state.discard()
        ws, event_uuid = str(record.get("workspace_id") or ""), str(record.get("event_uuid") or "")
        self.state.seen.put(keys.seen_key(ws, event_uuid), position or 1)
        return self._rejection(record_name, record, Rejection(reason))

    # -- users ---------------------------------------------------------------------------------------

    def _user(self, ws: str, record: dict[str, Any]) -> list[Output]:
        rules = self.directory.rules(ws)
        raw = parse_attributes(record.get("attributes_json") or "{}")
        ids = record_identifiers(
            rules,
            record.get("customer_id"),
            record.get("anonymous_id"),
            record.get("user_identifiers") or {},
            raw,
        )
        owners = self._owners(ws, ids)
        own = owners.get(ids[0]) or self._compatible_owner(ws, ids, owners)
        received = to_ms(record["received_at"])
        if own is None:
            if record.get("update_existing_only"):
                raise Rejection(
                    "update_existing_only is set and no user matches the record", outcome="skipped"
                )
            profile = self._new_profile(ws, keys.new_uid(ws, record["event_uuid"]), received)
        else:
            profile = self._profile(ws, own)
        capped = self._over_merge_cap(ws, profile["uid"], owners)
        if capped:  # the value is dropped from this user's record: no merge, no identifier, no attribute
            ids = [pair for pair in ids if pair not in capped]
            owners = {pair: uid for pair, uid in owners.items() if pair not in capped}
            raw = {k: v for k, v in raw.items() if k not in identifier_keys(name for name, _ in capped)}
        update = parse_update(raw)
        apply_update(profile["attributes"], update)
        apply_unset(profile["attributes"], record.get("unset_attributes_json"))
        profile["platforms"] = apply_platforms(profile["platforms"], update.platforms)
        self._take_identifiers(profile, ids)
        profile["last_seen"] = max(profile["last_seen"], received)
        touched = {profile["uid"]: profile}
        self._claim(ws, profile, ids, owners)
        self._save(ws, profile)
        group = distinct([profile["uid"], *(u for u in owners.values() if u != profile["uid"])])
        events = self._merge_group(ws, rules, group, touched, received) if len(group) > 1 else []
        return [*events, *(self._snapshot(ws, p) for p in touched.values())]

    def _over_merge_cap(self, ws: str, uid: str, owners: dict[tuple[str, str], str]) -> set[tuple[str, str]]:
        """As in MoEngage, only the first 50 users with the same identifier value are merged. Each value that
        would merge another user into ``uid`` counts that user; a value already at the cap is returned."""
        capped = set()
        for (name, value), owner in owners.items():
            if owner == uid:
                continue
            key = keys.identity_count_key(ws, name, value)
            merged = self.state.identity.get(key) or 1  # the value's first user
            if merged >= MAX_USERS_PER_IDENTIFIER_VALUE:
                capped.add((name, value))
            else:
                self.state.identity.put(key, merged + 1)
        return capped

    def _compatible_owner(
        self, ws: str, ids: list[tuple[str, str]], owners: dict[tuple[str, str], str]
    ) -> str | None:
        """A user found by a secondary identifier owns the record if it lacks a value for the primary one."""
        name = ids[0][0]
        for pair in ids[1:]:
            uid = owners.get(pair)
            if uid is not None and _identifier_value(self._profile(ws, uid), name) is None:
                return uid
        return None

    def _take_identifiers(self, profile: Profile, ids: list[tuple[str, str]]) -> None:
        """The record's identifiers become the profile's: ID only when it has none, others latest-wins."""
        for name, value in ids:
            if name == CUSTOMER_ID:
                profile["customer_id"] = profile["customer_id"] or value
            elif name == ANONYMOUS_ID:
                if value not in profile["anonymous_ids"]:
                    profile["anonymous_ids"].append(value)
            else:
                profile["identifiers"][name] = value

    def _claim(
        self, ws: str, profile: Profile, ids: list[tuple[str, str]], owners: dict[tuple[str, str], str]
    ) -> None:
        """Unowned identifier values now resolve to this user."""
        for name, value in ids:
            if (name, value) not in owners:
                self.state.identity.put(keys.identity_key(ws, name, value), profile["uid"])
                profile["aliases"].append([name, value])

    # -- merges --------------------------------------------------------------------------------------

    def _merge_group(
        self, ws: str, rules: IdentityRules, group: list[str], touched: dict[str, Profile], at: int
    ) -> list[Output]:
        """Merge every user of ``group`` into the one MoEngage's rules retain."""
        profiles = [touched.get(uid) or self._profile(ws, uid) for uid in group]
        retained = choose_retained(profiles, rules.merge_priority_attribute)
        events: list[Output] = []
        for merged in profiles:
            if merged["uid"] != retained["uid"]:
                events += self._merge(ws, retained, merged, at)
                touched[merged["uid"]] = merged
        touched[retained["uid"]] = retained
        return events

    def _merge(self, ws: str, retained: Profile, merged: Profile, at: int) -> list[Output]:
        r, m = retained, merged
        r["attributes"] = merge_attributes(r["attributes"], m["attributes"])
        r["identifiers"] = m["identifiers"] | r["identifiers"]
        r["customer_id"] = r["customer_id"] or m["customer_id"]
        r["anonymous_ids"] = distinct([*r["anonymous_ids"], *m["anonymous_ids"]])
        r["platforms"] = distinct([*r["platforms"], *m["platforms"]])
        r["first_seen"] = min(r["first_seen"], m["first_seen"])
        r["last_seen"] = max(r["last_seen"], m["last_seen"])
        r["merged_uids"] = distinct([*r["merged_uids"], m["uid"], *m["merged_uids"]])
        for name, value in m["aliases"]:
            self.state.identity.put(keys.identity_key(ws, name, value), r["uid"])
            r["aliases"].append([name, value])
        m["aliases"] = []
        m["merged_into"] = r["uid"]
        self._move_devices(ws, m["uid"], r["uid"])
        self._save(ws, r)
        self._save(ws, m)
        detail = {
            "merged_user": m["uid"],
            "retained_user": r["uid"],
            "merged_customer_id": m["customer_id"],
            "retained_customer_id": r["customer_id"],
        }
        return [
            self._system_event(ws, r, MERGED_EVENT, m["uid"], detail, at),
            self._system_event(ws, m, MERGE_EVENT, r["uid"], detail, at),
        ]

    def _move_devices(self, ws: str, from_uid: str, to_uid: str) -> None:
        """Devices of the merged user move to the retained one (up to the per-user cap)."""
        moving = self.state.devices.get(keys.user_key(ws, from_uid)) or {}
        if not moving:
            return
        book = dict(self.state.devices.get(keys.user_key(ws, to_uid)) or {})
        for device_id, device in moving.items():
            if device_id not in book and len(book) >= MAX_DEVICES_PER_USER:
                self._unindex_device(ws, device)
                continue
            book[device_id] = device
            for kind, value in unique_values(device):
                self.state.device_index.put(keys.device_index_key(ws, kind, value), [to_uid, device_id])
        self.state.devices.put(keys.user_key(ws, to_uid), book)
        self.state.devices.delete(keys.user_key(ws, from_uid))

    # -- devices -------------------------------------------------------------------------------------

    def _device(self, ws: str, record: dict[str, Any]) -> list[Output]:
        rules = self.directory.rules(ws)
        ids = record_identifiers(rules, record.get("customer_id"), record.get("anonymous_id"), {})
        uid = self._first_owner(ws, ids)
        if uid is None:
            raise Rejection(
                f"devices can be created for existing users only: no user has {ids[0][0]} {ids[0][1]!r}"
            )
        device_id = record.get("device_id") or ""
        if not device_id.strip():
            raise Rejection("device_id is required")
        attributes = device_attributes(record.get("attributes_json") or "{}")
        book = dict(self.state.devices.get(keys.user_key(ws, uid)) or {})
        check_capacity(book, device_id)
        received = to_ms(record["received_at"])
        old = book.get(device_id)
        device = (
            (
                old
                or {
                    "moengage_device_id": keys.device_uid(ws, device_id),
                    "device_id": device_id,
                    "created_at": received,
                }
            )
            | attributes
            | {"updated_at": received}
        )
        touched = {uid}
        if old is not None:
            stale = set(unique_values(old)) - set(unique_values(device))
            for kind, value in stale:
                self.state.device_index.delete(keys.device_index_key(ws, kind, value))
        for kind, value in unique_values(device):
            index_key = keys.device_index_key(ws, kind, value)
            holder = self.state.device_index.get(index_key)
            if holder is not None and holder != [uid, device_id]:
                touched.add(self._remove_device(ws, holder[0], holder[1], keep=(uid, device_id)))
                if holder[0] == uid:
                    book.pop(holder[1], None)
            self.state.device_index.put(index_key, [uid, device_id])
        book[device_id] = device
        self.state.devices.put(keys.user_key(ws, uid), book)
        profile = self._profile(ws, uid)
        profile["last_seen"] = max(profile["last_seen"], received)
        self._save(ws, profile)
        return [self._snapshot(ws, self._profile(ws, u)) for u in sorted(touched)]

    def _remove_device(self, ws: str, uid: str, device_id: str, keep: tuple[str, str]) -> str:
        """A device whose device_id, push_id, moe_gaid or idfv is taken over by a new device is deleted."""
        book = dict(self.state.devices.get(keys.user_key(ws, uid)) or {})
        device = book.pop(device_id, None)
        if device is not None:
            self._unindex_device(ws, device, keep)
            self.state.devices.put(keys.user_key(ws, uid), book)
        return uid

    def _unindex_device(self, ws: str, device: dict[str, Any], keep: tuple[str, str] | None = None) -> None:
        for kind, value in unique_values(device):
            index_key = keys.device_index_key(ws, kind, value)
            holder = self.state.device_index.get(index_key)
            if holder is not None and tuple(holder) != keep and holder[1] == device["device_id"]:
                self.state.device_index.delete(index_key)

    # -- events --------------------------------------------------------------------------------------

    def _event(self, ws: str, record: dict[str, Any]) -> list[Output]:
        rules = self.directory.rules(ws)
        ids = record_identifiers(
            rules, record.get("customer_id"), record.get("anonymous_id"), record.get("user_identifiers") or {}
        )
        event_ms = to_ms(record["user_time"])
        uid = self._first_owner(ws, ids)
        outputs: list[Output] = []
        if uid is None:
            profile = self._new_profile(ws, keys.new_uid(ws, record["event_uuid"]), event_ms)
            self._take_identifiers(profile, ids)
            self._claim(ws, profile, ids, {})
            self._save(ws, profile)
            outputs.append(self._snapshot(ws, profile))
        else:
            profile = self.state.users.get(keys.user_key(ws, uid))
            if profile is None:
                # The identity index knows the user, its profile is missing: state restored after a crash
                # in the middle of a batch's changelog writes (see processors.lane). The event is kept:
                # the profile is made again under the same uid (the one its identifiers point at).
                profile = self._new_profile(ws, uid, event_ms)
                self._take_identifiers(profile, ids)
                profile["aliases"] = [list(pair) for pair in ids if self._first_owner(ws, [pair]) == uid]
                self._save(ws, profile)
                outputs.append(self._snapshot(ws, profile))
            if event_ms > profile["last_seen"] + LAST_SEEN_RESOLUTION_MS:
                profile = dict(profile, last_seen=event_ms)  # shallow copy: the cached value stays intact
                self._save(ws, profile)
        device_id = record.get("device_id") or record.get("customer_id") or record.get("anonymous_id")
        book = self.state.devices.get(keys.user_key(ws, profile["uid"])) or {}
        device = book.get(device_id) if device_id else None
        outputs.append(self._enriched(ws, record, profile, device, event_ms))
        return outputs

    def _enriched(
        self, ws: str, record: dict[str, Any], profile: Profile, device: dict[str, Any] | None, event_ms: int
    ) -> Output:
        code = record["action"]
        try:
            attributes = jsoncodec.loads(record.get("attributes_json") or "{}")
        except ValueError as exc:
            raise Rejection(f"event attributes_json is not valid JSON: {exc}") from exc
        if not isinstance(attributes, dict):
            raise Rejection("event attributes_json must be a JSON object")
        kind = event_type(code)
        if kind == "CAMPAIGN_EVENT":
            attributes = {k: v for k, v in attributes.items() if k not in UNSUPPORTED_CAMPAIGN_ATTRIBUTES}
        user_attributes = profile["attributes"] | {"moengage_user_id": profile["uid"]}
        device_out = {k: v for k, v in (device or {}).items() if k not in ("created_at", "updated_at")}
        via = channel(code)
        value = {
            "workspace_id": ws,
            "event_uuid": record["event_uuid"],
            "event_name": event_name(code),
            "event_code": code,
            "event_time": event_ms // 1000,
            "event_type": kind,
            "event_source": "MOENGAGE",
            "uid": profile["uid"],
            "customer_id": profile["customer_id"],
            "event_attributes_json": jsoncodec.dumps(attributes),
            "user_attributes_json": jsoncodec.dumps(user_attributes),
            "device_attributes_json": jsoncodec.dumps(device_out),
            "push_id": _first(attributes.get("push_id"), (device or {}).get("push_id"))
            if via == "Push"
            else None,
            "email_id": _first(attributes.get("email_id"), profile["attributes"].get("u_em"))
            if via == "Email"
            else None,
            "mobile_number": _first(attributes.get("mobile_number"), profile["attributes"].get("u_mb"))
            if via == "SMS"
            else None,
            "platform": record.get("platform"),
            "received_at": to_ms(record["received_at"]),
            "ingested_at": self.clock(),
        }
        return Output(EVENTS, keys.topic_key(ws, profile["uid"]), "EnrichedEvent", value)

    def _system_event(
        self, ws: str, profile: Profile, code: str, other: str, detail: dict[str, Any], at: int
    ) -> Output:
        """MOE_USER_MERGED / MOE_USER_MERGE_EVENT, published like any enriched event."""
        merged, retained = (other, profile["uid"]) if code == MERGED_EVENT else (profile["uid"], other)
        value = {
            "workspace_id": ws,
            "event_uuid": keys.merge_event_uuid(ws, merged, retained, code),
            "event_name": code,
            "event_code": code,
            "event_time": at // 1000,
            "event_type": "USER_ACTION_EVENT",
            "event_source": "MOENGAGE",
            "uid": profile["uid"],
            "customer_id": profile["customer_id"],
            "event_attributes_json": jsoncodec.dumps(detail),
            "user_attributes_json": jsoncodec.dumps(
                profile["attributes"] | {"moengage_user_id": profile["uid"]}
            ),
            "device_attributes_json": "{}",
            "received_at": at,
            "ingested_at": self.clock(),
        }
        return Output(EVENTS, keys.topic_key(ws, profile["uid"]), "EnrichedEvent", value)

    # -- profiles ------------------------------------------------------------------------------------

    def _owners(self, ws: str, ids: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        owners = {}
        for name, value in ids:
            uid = self.state.identity.get(keys.identity_key(ws, name, value))
            if uid is not None:
                owners[(name, value)] = uid
        return owners

    def _first_owner(self, ws: str, ids: list[tuple[str, str]]) -> str | None:
        """The user of the record's highest-priority identifier that is known."""
        for name, value in ids:
            uid = self.state.identity.get(keys.identity_key(ws, name, value))
            if uid is not None:
                return str(uid)
        return None

    def _new_profile(self, ws: str, uid: str, at: int) -> Profile:
        return {
            "uid": uid,
            "customer_id": None,
            "anonymous_ids": [],
            "identifiers": {},
            "aliases": [],
            "attributes": {},
            "platforms": [],
            "first_seen": at,
            "last_seen": at,
            "merged_into": None,
            "merged_uids": [],
            "revision": 0,
        }

    def _profile(self, ws: str, uid: str) -> Profile:
        """A copy of the stored profile, so a rejected record cannot leave a half-changed cached one."""
        stored = self.state.users.get(keys.user_key(ws, uid))
        if stored is None:
            raise Rejection(f"identity index points at unknown user {uid}")
        return jsoncodec.loads(jsoncodec.dumps_bytes(stored))

    def _save(self, ws: str, profile: Profile) -> None:
        self.state.users.put(keys.user_key(ws, profile["uid"]), profile)

    def _snapshot(self, ws: str, profile: Profile) -> Output:
        """The UserProfile record published to the compacted profiles topic."""
        profile["revision"] += 1
        self._save(ws, profile)
        book = self.state.devices.get(keys.user_key(ws, profile["uid"])) or {}
        attributes = profile["attributes"] | {"cr_t": profile["first_seen"], "u_l_a": profile["last_seen"]}
        value = {
            "workspace_id": ws,
            "uid": profile["uid"],
            "customer_id": profile["customer_id"],
            "anonymous_ids": profile["anonymous_ids"],
            "identifiers": profile["identifiers"],
            "attributes_json": jsoncodec.dumps(attributes),
            "platforms": profile["platforms"],
            "devices_json": jsoncodec.dumps(list(book.values())),
            "first_seen": profile["first_seen"],
            "last_seen": profile["last_seen"],
            "merged_into": profile["merged_into"],
            "merged_uids": profile["merged_uids"],
            "updated_at": self.clock(),
            "revision": profile["revision"],
            "deleted": False,
        }
        return Output(PROFILES, keys.topic_key(ws, profile["uid"]), "UserProfile", value)

    def _rejection(self, record_name: str, record: dict[str, Any], exc: Rejection) -> Output:
        ws = str(record.get("workspace_id") or "")
        value = {
            "workspace_id": ws,
            "event_uuid": str(record.get("event_uuid") or ""),
            "record_name": record_name,
            "outcome": exc.outcome,
            "reason": exc.reason,
            "request_id": record.get("request_id"),
            "origin": record.get("origin"),
            "record_json": json.dumps(record, default=_jsonable, separators=(",", ":")),
            "rejected_at": self.clock(),
        }
        return Output(REJECTED, ws.encode(), "RejectedRecord", value)


def _identifier_value(profile: Profile, name: str) -> str | None:
    if name == CUSTOMER_ID:
        return profile["customer_id"]
    if name == ANONYMOUS_ID:
        return profile["anonymous_ids"][0] if profile["anonymous_ids"] else None
    return profile["identifiers"].get(name)


def _first(*values: Any) -> str | None:
    for value in values:
        if value not in (None, ""):
            return str(value)
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_ms(value)
    return str(value)
