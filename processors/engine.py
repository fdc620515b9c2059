"""The identity core: identity resolution, profiles, devices and event enrichment, one partition at a time.

State is partitioned by user, not by workspace (:mod:`~inflow.processors.routing`): a partition of
``ingest.records`` holds the identity-index entries of the identifier values routed to it and the
profiles, device books and seen marks of the users whose slot (the route of the identifier that created
them) is routed to it. With one identifier per workspace (the default) every record is applied where it
arrives. With identity resolution on, a record may name identifiers that live on other partitions; the
processor then works by messages on the log (:mod:`~inflow.processors.protocol`):

- a record whose user lives elsewhere is **forwarded** there (FORWARD), in order behind the records of
  its key;
- an identifier value of a user that lives on another partition is **claimed** there (CLAIM); a claim
  that finds another user is a merge: the user of the larger slot is **shipped** (SHIP) to the smaller
  one, whose partition **merges** the carried profile and devices into its own (CARRY) and re-points the
  carried user's identifiers (REPOINT). The shipped slot keeps a forward pointer. Pointers only ever
  point to smaller slots, so two merges racing on different workers converge on the smallest slot of the
  connected users (a union-find on the log); ``docs/IDENTITY.md`` has the protocol and its failure cases.

The processor is pure over :class:`~inflow.processors.state.State`; the lane stage in ``processors.lane``
feeds it, publishes its outputs (protocol messages included), then writes the state.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from inflow.processors import jsoncodec, keys, protocol, requests
from inflow.processors.attributes import (
    IMPORT_SOURCE,
    apply_platforms,
    apply_unset,
    apply_update,
    merge_attributes,
    parse_attributes,
    parse_update,
)
from inflow.processors.classification import (
    CAMPAIGN_EVENT,
    CAMPAIGN_EVENTS,
    UNSUPPORTED_CAMPAIGN_ATTRIBUTES,
    USER_ACTION_EVENT,
)
from inflow.processors.devices import MAX_DEVICES_PER_USER, check_capacity, device_attributes, unique_values
from inflow.processors.exceptions import Rejection
from inflow.processors.fair_usage import TRACKED, FairUsage
from inflow.processors.identity import (
    MAX_USERS_PER_IDENTIFIER_VALUE,
    choose_retained,
    distinct,
    identifier_keys,
    record_identifiers,
)
from inflow.processors.outputs import EVENTS, INGEST, PROFILES, PROTOCOL, REJECTED, Output
from inflow.processors.requests import is_erased
from inflow.processors.routing import identifier_route, partition_of
from inflow.processors.state import State
from inflow.processors.workspaces import ANONYMOUS_ID, CUSTOMER_ID, IdentityRules, IdentityRulesDirectory
from inflow.schemas.avro_template import SplicedRecord, long_bytes
from inflow.schemas.serde import AvroSerde

MERGED_EVENT = "MOE_USER_MERGED"  # on the retained user
MERGE_EVENT = "MOE_USER_MERGE_EVENT"  # on the merged user
Profile = dict[str, Any]
Ids = list[tuple[str, str]]
# Events move last seen forward only by this much or more: one profile write per user and minute, not per
# event. User and device upserts set it exactly.
LAST_SEEN_RESOLUTION_MS = 60_000
WORKSPACE_DISABLED = "workspace disabled"
# Defaults of the profile guard (WorkerSettings): far below the broker's 1 MB message limit, so neither a
# profile snapshot nor an event that carries the profile's attributes can grow past what Kafka accepts.
MAX_PROFILE_BYTES = 256 * 1024
MAX_PROFILE_ATTRIBUTES = 2_000
MAX_POINTER_HOPS = 64
# An identifier value is a key of the identity index and part of its user's slot: bounded like a key.
MAX_IDENTIFIER_BYTES = 4096
JSON_CACHE_SIZE = 20_000  # users' and devices' attribute JSON kept for their next events
HOMES_CACHE_SIZE = 100_000  # routes whose partition is remembered
# The EnrichedEvent fields an event run binds once (its user's) and those written per event.
RUN_BOUND = (
    "workspace_id",
    "event_source",
    "uid",
    "customer_id",
    "user_attributes_json",
    "device_attributes_json",
)
RUN_VARYING = (
    "event_uuid",
    "event_name",
    "event_code",
    "event_time",
    "event_type",
    "event_attributes_json",
    "push_id",
    "email_id",
    "mobile_number",
    "platform",
    "received_at",
    "ingested_at",
)


# A run's raw events (LaneProcessor.raw_event): their constant fields' bytes, and the codes they leave to
# the usual path (a campaign event's name, type and recipients come from its code and attributes).
USER_ACTION_ENCODED = long_bytes(len(USER_ACTION_EVENT)) + USER_ACTION_EVENT.encode()
NULL_ENCODED = long_bytes(0)  # a ["null", ...] union's null
CAMPAIGN_CODES = frozenset(code.encode() for code in CAMPAIGN_EVENTS)


def now_ms() -> int:
    return int(time.time() * 1000)


def to_ms(value: Any) -> int:
    """Avro timestamp-millis values arrive as aware datetimes (fastavro) or epoch ms."""
    if type(value) is int:  # the compiled readers' (most calls)
        return value
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


def enriched_events(serde: AvroSerde, topic: str | None) -> SplicedRecord:
    """The EnrichedEvent encoder :meth:`LaneProcessor.next_event` binds per run (for ``topic``'s framing)."""
    sample = {
        "workspace_id": "W",
        "event_uuid": "e",
        "event_name": "Purchase é",
        "event_code": "Purchase é",
        "event_time": 1_750_000_000,
        "event_type": USER_ACTION_EVENT,
        "event_source": "MOENGAGE",
        "uid": "u",
        "customer_id": "c",
        "event_attributes_json": "{}",
        "user_attributes_json": '{"a":1}',
        "device_attributes_json": "{}",
        "push_id": None,
        "email_id": "e@x.io",
        "mobile_number": None,
        "platform": "ANDROID",
        "received_at": 1_750_000_000_123,
        "ingested_at": 1_750_000_000_456,
    }
    return SplicedRecord(serde, "EnrichedEvent", topic, RUN_BOUND, RUN_VARYING, sample)


def is_pointer(stored: Any) -> bool:
    """A slot whose user was merged into a smaller slot: ``{"forward": slot, "uid": uid}``."""
    return isinstance(stored, dict) and "forward" in stored


@dataclass(slots=True)
class EventRun:
    """What an event applied by the general path resolved (see :meth:`LaneProcessor.next_event`): valid
    for the events right after it in the same pack that name the same user and device the same way."""

    ws: str
    slot: str
    customer_id: Any
    anonymous_id: Any
    user_identifiers: Any
    device_id: Any
    named: tuple[str, str]
    profile: Profile
    device: dict[str, Any] | None
    key: bytes  # of its enriched events
    encode: Callable[..., bytes] | None  # its enriched events' encoder, the user's fields bound (or None)
    seen: bytes = b""  # its events' seen-mark keys start so (keys.seen_key without the event_uuid)
    runs: list[bytes] | None = None  # what its encoder splices between an event's fields (raw_event)


def run_seed(ws: str, record: dict[str, Any]) -> EventRun:
    """A run a user record starts (see :meth:`LaneProcessor.next_event`): only the fields an event must
    share with it are known; the event's own identifiers resolve its user (``slot`` None until then)."""
    return EventRun(
        ws,
        None,  # type: ignore[arg-type]
        record.get("customer_id"),
        record.get("anonymous_id"),
        record.get("user_identifiers"),
        record.get("device_id"),
        ("", ""),
        {},
        None,
        b"",
        None,
    )


class LaneProcessor:
    """Applies one record of one ``ingest.records`` partition to its state; returns what to publish."""

    def __init__(
        self,
        state: State,
        directory: IdentityRulesDirectory,
        clock: Callable[[], int] = now_ms,
        disabled: Callable[[str], bool] = lambda workspace_id: False,
        max_profile_bytes: int = MAX_PROFILE_BYTES,
        max_profile_attributes: int = MAX_PROFILE_ATTRIBUTES,
        fair_usage: FairUsage | None = None,
        enriched_events: SplicedRecord | None = None,
    ) -> None:
        """``fair_usage``: the Fair Usage Policy's counts and blocks (None: not enforced);
        ``enriched_events``: the EnrichedEvent encoder of the events topic with :data:`RUN_BOUND` bound
        per user and :data:`RUN_VARYING` per event (see :meth:`next_event`; None: outputs as records)."""
        self.state = state
        self.directory = directory
        self.clock = clock
        self.disabled = disabled
        self.max_profile_bytes = max_profile_bytes
        self.max_profile_attributes = max_profile_attributes
        self.fair_usage = fair_usage
        # A run passes an event's fields by position (see _event_values): RUN_VARYING in the schema's order.
        fast = enriched_events is not None and enriched_events.fast and enriched_events.order == RUN_VARYING
        self.enriched_events = enriched_events if fast else None
        self.handlers = {
            "UserUpsert": self._user,
            "DeviceUpsert": self._device,
            "EventRecord": self._event,
            "MergeRequest": self._merge_request,
            "DeleteRequest": self._delete_request,
            "DeviceOptOut": self._device_opt_out,
        }
        self.protocol_handlers = {
            protocol.CLAIM: self._on_claim,
            protocol.SHIP: self._on_ship,
            protocol.CARRY: self._on_carry,
            protocol.REPOINT: self._on_repoint,
            protocol.MERGE: self._on_merge_request,
            protocol.RELEASE: self._on_release,
        }
        self.duplicates = 0
        self.merges = 0
        self.run: EventRun | None = None  # see next_event
        self._json_cache: dict[tuple[str, Any], tuple[Any, Any, str]] = {}  # see _user_json
        self._raw_times: list[Any] = [None, b"", None, b""]  # raw_event: received_at and now, encoded
        self._homes: dict[tuple[str, int], int] = {}  # see home
        self.partition = 0  # the partition whose records are applied now (set by the lane per partition)
        self.partitions = 1  # partitions of ingest.records: where every identifier and slot lives

    def at(self, partition: int, partitions: int) -> None:
        """The next records are those of ``partition`` of a topic with ``partitions`` partitions."""
        self.partition, self.partitions = partition, partitions

    def home(self, route: str) -> int:
        """The partition of a route (CRC-32 of its bytes), remembered: a record asks it several times."""
        key = (route, self.partitions)
        home = self._homes.get(key)
        if home is None:
            if len(self._homes) >= HOMES_CACHE_SIZE:
                self._homes.clear()
            home = self._homes[key] = partition_of(route, self.partitions)
        return home

    def local(self, route: str) -> bool:
        return self.partitions == 1 or self.home(route) == self.partition

    # -- ingest records ------------------------------------------------------------------------------

    def process(
        self,
        record_name: str,
        record: dict[str, Any],
        position: list[int] | None = None,
        raw: bytes | None = None,
        slot: str | None = None,
    ) -> list[Output]:
        """Route, de-duplicate on event_uuid, apply, and mark seen; a bad record becomes a rejection output.

        ``raw`` is the record's encoded bytes (forwarded as they are when its user lives on another
        partition); ``slot`` is the user a forwarding partition resolved it to. ``position`` is where the
        record sits in the log (partition, offset, index). The seen mark stores it: a record seen at another
        position is an upstream duplicate and is dropped, while the same message read again after a crash
        is applied again, because its outputs may have been lost with the crash even though its seen mark
        reached the changelog. Re-applying is harmless: updates are idempotent and outputs carry event_uuid.
        """
        self.run = None
        handler = self.handlers.get(record_name)
        ws, event_uuid = record.get("workspace_id"), record.get("event_uuid")
        if handler is None or not isinstance(ws, str) or not isinstance(event_uuid, str):
            return [self._rejection(record_name, record, Rejection(f"{record_name} is not an ingest record"))]
        if self.disabled(ws):
            # `inflow workspaces disable` stops the workspace everywhere: the gateway refuses its requests,
            # and what was accepted before (or comes from an import) is rejected here, its state untouched
            # (no seen mark either: a copy sent after the workspace is enabled again is applied).
            return [self._rejection(record_name, record, Rejection(WORKSPACE_DISABLED))]
        rules = self.directory.rules(ws)
        try:
            ids, raw_attributes = self._identify(record_name, record, rules)
        except Rejection as exc:
            return [self._rejection(record_name, record, exc)]
        entry = identifier_route(ws, *ids[0])
        if slot is None:
            if not self.local(entry):
                return [self._forward(ws, None, entry, raw)]
            slot = self.state.identity.get(keys.identity_key(ws, *ids[0]))
        asked, slot = slot, self._follow(ws, slot)
        if slot is not None and not self.local(slot):
            return [self._forward(ws, slot, slot, raw)]
        if slot is None and asked is not None:  # the user at ``asked`` was erased since
            again = requests.erased_again(self, ws, record_name, record, asked, position)
            if again is not None:
                return again
            if not self.local(entry):  # another record for that user: its entry decides
                return [self._forward(ws, None, entry, raw)]
        seen = keys.seen_key(ws, slot or entry, event_uuid)
        marked = self.state.seen.get(seen)
        if marked is not None and (position is None or marked != position):
            self.duplicates += 1
            return []
        if self.fair_usage is not None and record_name in TRACKED:  # counted per user where it is applied
            at = to_ms(record["received_at"])
            blocked = self.fair_usage.check(ws, slot or entry, at, self.partition, ids[0])
            if blocked is not None:  # no seen mark: the block stays written (see processors.fair_usage)
                return [self._rejection(record_name, record, Rejection(blocked))]
        try:
            outputs = handler(ws, record, rules, ids, raw_attributes, slot)
        except Rejection as exc:
            self.state.discard()
            outputs = [self._rejection(record_name, record, exc)]
        else:
            if len(outputs) == 1:
                if record_name == "EventRecord" and slot is not None:
                    self.run = self._event_run(ws, slot, record, ids[0])
                elif record_name == "UserUpsert":  # a pack's profile update: its first event may run
                    self.run = run_seed(ws, record)
        self.state.seen.put(seen, position or 1)
        return outputs

    def _event_run(
        self, ws: str, slot: str, record: dict[str, Any], named: tuple[str, str]
    ) -> EventRun | None:
        """The run an event just applied to the existing user at ``slot`` starts (None: no run)."""
        if not self.local(slot):
            return None
        user = keys.user_key(ws, slot)
        profile = self.state.users.get(user)
        if not isinstance(profile, dict) or is_pointer(profile) or is_erased(profile):
            return None
        device_id = record.get("device_id") or record.get("customer_id") or record.get("anonymous_id")
        book = self.state.devices.get(user) or {}
        device = book.get(device_id) if device_id else None
        encode, runs = None, None
        spliced = self.enriched_events
        if spliced is not None:
            bound = self._user_fields(ws, profile, device)
            runs = spliced.bound_runs(**bound)
            encode = spliced.plain_bound(**bound) if runs is None else spliced.encoder_of(runs)
        return EventRun(
            ws,
            slot,
            record.get("customer_id"),
            record.get("anonymous_id"),
            record.get("user_identifiers"),
            record.get("device_id"),
            named,
            profile,
            device,
            keys.topic_key(ws, profile["uid"]),
            encode,
            keys.seen_key(ws, slot, ""),
            runs,  # enriched_events is kept only when it is fast and in RUN_VARYING's order
        )

    def _seeded_run(self, ws: str, record: dict[str, Any]) -> EventRun | None:
        """The run of an event right after a user record with the same identifying fields: resolved as
        :meth:`process` resolves it (identifiers, entry, index, pointers), for an existing local user."""
        try:
            ids, _ = self._identify("EventRecord", record, self.directory.rules(ws))
            if not self.local(identifier_route(ws, *ids[0])):
                return None
            slot = self._follow(ws, self.state.identity.get(keys.identity_key(ws, *ids[0])))
        except Rejection:
            return None  # the general path rejects it with the reason
        if slot is None or not self.local(slot):
            return None
        return self._event_run(ws, slot, record, ids[0])

    def next_event(self, record: dict[str, Any], position: list[int]) -> list[Output] | None:
        """The next event of a pack, applied with what the event before it resolved: the same outputs and
        state writes as :meth:`process` makes for it, without resolving its user again. None when the
        record is not such an event (another user or device, another workspace state, a profile update
        due, a bad record): the caller then gives it to :meth:`process`, nothing having been changed.

        Between two events of one pack about one user only events are applied, which change neither the
        identity index, the profile (but for ``last_seen``, which sends the event to the general path) nor
        the device book, so the previous event's resolution still holds. After a user record (a Bulk
        ``customer`` element, most packs' first record) the first event's user is resolved once from its
        own identifiers, as :meth:`process` would, and the run goes on from there."""
        run = self.run
        if (
            run is None
            or record.get("workspace_id") != run.ws
            or record.get("customer_id") != run.customer_id
            or record.get("anonymous_id") != run.anonymous_id
            or record.get("device_id") != run.device_id
            or record.get("user_identifiers") != run.user_identifiers
            or self.disabled(run.ws)
        ):
            return None
        event_uuid = record.get("event_uuid")
        if not isinstance(event_uuid, str):
            return None
        if run.slot is None:  # started by a user record: the event's identifiers name the user
            run = self.run = self._seeded_run(run.ws, record)
            if run is None:
                return None
        ws, profile = run.ws, run.profile
        seen = run.seen + event_uuid.encode("utf-8", "surrogatepass")  # keys.seen_key(ws, run.slot, uuid)
        marked = self.state.seen.get(seen)
        if marked is not None and marked != position:
            self.duplicates += 1
            return []
        event_ms = to_ms(record["user_time"])
        if event_ms > profile["last_seen"] + LAST_SEEN_RESOLUTION_MS:
            return None
        try:
            if run.encode is None:
                output = self._enriched(ws, record, profile, run.device, event_ms)
            else:
                output = self._encoded_event(run, record, event_ms)
        except Rejection:
            return None
        if self.fair_usage is not None:
            at = to_ms(record["received_at"])
            blocked = self.fair_usage.check(ws, run.slot, at, self.partition, run.named)
            if blocked is not None:
                self.run = None
                return [self._rejection("EventRecord", record, Rejection(blocked))]
        self.state.seen.put(seen, position)
        return [output]

    def raw_event(
        self, raw: tuple[Any, ...], before: dict[str, Any], position: list[int]
    ) -> bytes | str | None:
        """:meth:`next_event` from an event's bytes, for the usual event of a run: ``raw`` holds its
        :data:`~inflow.processors.reading.RAW_EVENT` fields and its shared fields (workspace, request, user,
        device: ``before``'s) are those of the event just applied, which made this run. The enriched
        event's bytes are joined from the run's bound parts and the event's own field bytes (the same
        field types in both schemas: the same bytes the run's encoder writes, tested in
        tests/processors/test_event_runs.py), with the same state writes as :meth:`next_event`.

        A Fair Usage reason: the record is rejected with it (the caller reads the record for the
        rejection). None: not such an event here (a campaign event, a duplicate or a replay, a new
        ``last_seen``, attributes that are not a standard JSON object, text that is not ASCII, a disabled
        workspace); nothing was changed and the caller reads the record and goes the usual way."""
        run = self.run
        if run is None or run.runs is None or run.slot is None or self.disabled(run.ws):
            return None
        uuid_enc, uuid, action_enc, action, attrs_enc, attrs, platform_enc, event_ms = raw
        if not (uuid.isascii() and action.isascii() and platform_enc.isascii()) or action in CAMPAIGN_CODES:
            return None  # (non-ASCII text: the usual path checks its UTF-8)
        seen = run.seen + uuid
        if self.state.seen.get(seen) is not None:
            return None
        if event_ms > run.profile["last_seen"] + LAST_SEEN_RESOLUTION_MS:
            return None
        try:
            attributes = orjson.loads(attrs)
        except orjson.JSONDecodeError:
            return None
        if type(attributes) is not dict:
            return None
        received = to_ms(before["received_at"])
        if self.fair_usage is not None:
            blocked = self.fair_usage.check(run.ws, run.slot, received, self.partition, run.named)
            if blocked is not None:
                self.run = None
                return blocked
        self.state.seen.put(seen, position)
        r = run.runs
        now = self.clock()
        if received != self._raw_times[0]:  # one request's events were received at once
            self._raw_times[0], self._raw_times[1] = received, long_bytes(received)
        if now != self._raw_times[2]:  # and mostly enriched within the same millisecond as the one before
            self._raw_times[2], self._raw_times[3] = now, long_bytes(now)
        return b"".join(
            (
                r[0],
                uuid_enc,
                r[1],
                action_enc,  # event_name: a user's own event is named by its code
                r[2],
                action_enc,
                r[3],
                long_bytes(event_ms // 1000),
                r[4],
                USER_ACTION_ENCODED,
                r[5],
                attrs_enc,
                r[6],
                NULL_ENCODED,  # push_id, email_id, mobile_number: a campaign event's only
                r[7],
                NULL_ENCODED,
                r[8],
                NULL_ENCODED,
                r[9],
                platform_enc,
                r[10],
                self._raw_times[1],
                r[11],
                self._raw_times[3],
                r[12],
            )
        )

    def raw_output(self, value: bytes, record: dict[str, Any]) -> Output:
        """The Output of what :meth:`raw_event` made (for the usual publishing path, which checks it)."""
        run = self.run
        assert run is not None  # raw_event returned bytes: its run stays
        return self._event_output(run, value, record["event_uuid"], record["action"])

    def rejection(self, record_name: str, record: dict[str, Any], reason: str) -> Output:
        """The rejection of a record with ``reason`` (the state it wrote stays: a Fair Usage block)."""
        return self._rejection(record_name, record, Rejection(reason))

    def reject(
        self, record_name: str, record: dict[str, Any], position: list[int] | None, reason: str
    ) -> Output:
        """Undo what :meth:`process` just did for a record that cannot be published (its profile or event
        would be over a topic's size limit): its state changes are dropped and its rejection names the
        reason."""
        self.run = None
        self.state.discard()
        return self._rejection(record_name, record, Rejection(reason))

    def _identify(
        self, record_name: str, record: dict[str, Any], rules: IdentityRules
    ) -> tuple[Ids, dict[str, Any] | None]:
        """The record's active identifiers in priority order (and a user record's parsed attributes)."""
        ids, raw = self._identifiers(record_name, record, rules)
        for name, value in ids:
            size = len(value.encode("utf-8", "surrogatepass"))
            if size > MAX_IDENTIFIER_BYTES:
                raise Rejection(
                    f"the {name} value is {size} bytes, over the {MAX_IDENTIFIER_BYTES}-byte limit of an "
                    "identifier"
                )
        return ids, raw

    def _identifiers(
        self, record_name: str, record: dict[str, Any], rules: IdentityRules
    ) -> tuple[Ids, dict[str, Any] | None]:
        if record_name == "UserUpsert":
            raw = parse_attributes(record.get("attributes_json") or "{}")
            ids = record_identifiers(
                rules,
                record.get("customer_id"),
                record.get("anonymous_id"),
                record.get("user_identifiers") or {},
                raw,
            )
            return ids, raw
        if record_name in requests.RECORDS:
            return requests.identifiers(record_name, record, rules), None
        identifiers = record.get("user_identifiers") or {} if record_name == "EventRecord" else {}
        return record_identifiers(
            rules, record.get("customer_id"), record.get("anonymous_id"), identifiers
        ), None

    def _forward(self, ws: str, slot: str | None, route: str, raw: bytes | None) -> Output:
        """The record goes, unchanged, to the partition of ``route`` (its entry identifier or its user)."""
        if raw is None:
            raise RuntimeError("a record to forward needs its encoded bytes")
        return self._message(protocol.FORWARD, {"ws": ws, "slot": slot}, route, raw)

    def _message(self, kind: str, header: dict[str, Any], route: str, payload: bytes = b"") -> Output:
        data = protocol.encode(kind, header, payload)
        key = route.encode("utf-8", "surrogatepass")
        return Output(INGEST, key, PROTOCOL, {"kind": kind}, partition=self.home(route), raw=data)

    # -- users ---------------------------------------------------------------------------------------

    def _user(
        self,
        ws: str,
        record: dict[str, Any],
        rules: IdentityRules,
        ids: Ids,
        raw: dict[str, Any] | None,
        slot: str | None,
    ) -> list[Output]:
        raw = raw or {}
        here = [pair for pair in ids if self.local(identifier_route(ws, *pair))]
        owners = self._owners(ws, here)
        own = slot or owners.get(ids[0]) or self._compatible_owner(ws, ids, owners)
        received = to_ms(record["received_at"])
        if own is None:
            if record.get("update_existing_only"):
                raise Rejection(
                    "update_existing_only is set and no user matches the record", outcome="skipped"
                )
            profile = self._new_profile(ws, identifier_route(ws, *ids[0]), received)
        else:
            profile = self._profile(ws, own)
        capped = self._over_merge_cap(ws, profile["slot"], owners)
        if capped:  # the value is dropped from this user's record: no merge, no identifier, no attribute
            ids = [pair for pair in ids if pair not in capped]
            owners = {pair: s for pair, s in owners.items() if pair not in capped}
            raw = {k: v for k, v in raw.items() if k not in identifier_keys(name for name, _ in capped)}
        update = parse_update(raw, imported=record.get("source") == IMPORT_SOURCE)
        apply_update(profile["attributes"], update)
        apply_unset(profile["attributes"], record.get("unset_attributes_json"))
        profile["platforms"] = apply_platforms(profile["platforms"], update.platforms)
        self._take_identifiers(profile, ids)
        profile["last_seen"] = max(profile["last_seen"], received)
        self._guard(profile)
        claims = self._claim(ws, profile, ids, owners)
        self._save(ws, profile)
        group = distinct([profile["slot"], *(s for s in owners.values() if s != profile["slot"])])
        if len(group) == 1:
            return [self._snapshot(ws, profile), *claims]
        near = [s for s in group[1:] if self.local(s)]
        outputs: list[Output]
        if near:
            profiles = [profile, *(self._profile(ws, s) for s in near)]
            outputs = [*claims, *self._merge_here(ws, rules, profiles, {}, received)]
            root = min(p["slot"] for p in profiles)
        else:
            outputs = [*claims, self._snapshot(ws, profile)]
            root = profile["slot"]
        for other in (s for s in group[1:] if not self.local(s)):  # users homed elsewhere: by SHIP
            lo, hi = min(root, other), max(root, other)
            outputs.append(self._message(protocol.SHIP, {"ws": ws, "hi": hi, "lo": lo}, hi))
        return outputs

    def _guard(self, profile: Profile) -> None:
        """A profile never grows past its configured size or attribute count: the update that would take
        it there is rejected with the reason, and the profile keeps its last good state."""
        count = len(profile["attributes"])
        if count > self.max_profile_attributes:
            raise Rejection(
                f"the profile would hold {count} attributes, over the limit of {self.max_profile_attributes}"
            )
        size = len(jsoncodec.dumps_bytes(profile))
        if size > self.max_profile_bytes:
            raise Rejection(
                f"the profile would be {size} bytes, over the limit of {self.max_profile_bytes} bytes"
            )

    def _over_merge_cap(self, ws: str, slot: str, owners: dict[tuple[str, str], str]) -> set[tuple[str, str]]:
        """As in MoEngage, only the first 50 users with the same identifier value are merged. Each value that
        would merge another user into ``slot`` counts that user; a value already at the cap is returned."""
        capped = set()
        for (name, value), owner in owners.items():
            if owner == slot:
                continue
            if not self._count_merge(ws, name, value):
                capped.add((name, value))
        return capped

    def _count_merge(self, ws: str, name: str, value: str) -> bool:
        """Count one more user merged through this identifier value; False when it is at the cap."""
        key = keys.identity_count_key(ws, name, value)
        merged = self.state.identity.get(key) or 1  # the value's first user
        if merged >= MAX_USERS_PER_IDENTIFIER_VALUE:
            return False
        self.state.identity.put(key, merged + 1)
        return True

    def _compatible_owner(self, ws: str, ids: Ids, owners: dict[tuple[str, str], str]) -> str | None:
        """A user found by a secondary identifier owns the record if it lacks a value for the primary one."""
        name = ids[0][0]
        for pair in ids[1:]:
            slot = owners.get(pair)
            if (
                slot is not None
                and self.local(slot)
                and _identifier_value(self._profile(ws, slot), name) is None
            ):
                return slot
        return None

    def _take_identifiers(self, profile: Profile, ids: Ids) -> None:
        """The record's identifiers become the profile's: ID only when it has none, others latest-wins."""
        for name, value in ids:
            if name == CUSTOMER_ID:
                profile["customer_id"] = profile["customer_id"] or value
            elif name == ANONYMOUS_ID:
                if value not in profile["anonymous_ids"]:
                    profile["anonymous_ids"].append(value)
            else:
                profile["identifiers"][name] = value

    def _claim(self, ws: str, profile: Profile, ids: Ids, owners: dict[tuple[str, str], str]) -> list[Output]:
        """Identifier values not owned yet resolve to this user: here at once, elsewhere by a CLAIM."""
        claims = []
        for name, value in ids:
            if (name, value) in owners or [name, value] in profile["aliases"]:
                continue
            route = identifier_route(ws, name, value)
            if self.local(route):
                self.state.identity.put(keys.identity_key(ws, name, value), profile["slot"])
            else:
                header = {"ws": ws, "name": name, "value": value, "slot": profile["slot"]}
                claims.append(self._message(protocol.CLAIM, header, route))
            profile["aliases"].append([name, value])
        return claims

    # -- merges --------------------------------------------------------------------------------------

    def _merge_here(
        self,
        ws: str,
        rules: IdentityRules,
        profiles: list[Profile],
        carried_devices: dict[str, Any],
        at: int,
        retain: str | None = None,
    ) -> list[Output]:
        """Merge users whose data is on this partition into one, stored at the smallest slot.

        The retained user (its uid, its ID) is the one MoEngage's rules retain, or, for a Merge User
        request, the user of slot ``retain`` (the profile stored there or that absorbed it); where the data
        is stored is the smallest slot, whatever is retained, so merges racing elsewhere converge on the
        same slot. A carried profile (from another partition) has no state here; every local one that is
        not the smallest slot becomes a pointer to it."""
        root = min(p["slot"] for p in profiles)
        named = [p for p in profiles if retain is not None and retain in (p["slot"], *p.get("absorbed", []))]
        retained = named[0] if named else choose_retained(profiles, rules.merge_priority_attribute)
        outputs: list[Output] = []
        for merged in profiles:
            if merged is retained:
                continue
            outputs += self._merge(ws, retained, merged, at)
        moved = [p for p in profiles if p["slot"] != root]
        book = dict(self.state.devices.get(keys.user_key(ws, root)) or {})
        devices_moved = dict(carried_devices)
        for p in moved:
            if self.local(p["slot"]):
                devices_moved |= self.state.devices.get(keys.user_key(ws, p["slot"])) or {}
                self.state.devices.delete(keys.user_key(ws, p["slot"]))
                self.state.users.put(keys.user_key(ws, p["slot"]), _pointer(root, p))
            retained["absorbed"] = distinct(
                [*retained.get("absorbed", []), p["slot"], *p.get("absorbed", [])]
            )
        self._take_devices(ws, root, book, devices_moved)
        retained["slot"] = root
        # A slot's generations only grow: the user stored at the root carries the highest of the merged
        # users', so a user made at any of their slots after a deletion never gets a uid used before.
        retained["generation"] = max(_generation(p) for p in profiles)
        outputs += self._repoint(ws, retained, {p["slot"] for p in moved}, root)
        self._save(ws, retained)
        outputs.append(self._snapshot(ws, retained))
        self.merges += len(profiles) - 1
        return outputs

    def _merge(self, ws: str, retained: Profile, merged: Profile, at: int) -> list[Output]:
        """MoEngage's merge of two profiles: ``merged``'s data into ``retained``, its events and snapshot."""
        r, m = retained, merged
        r["attributes"] = merge_attributes(r["attributes"], m["attributes"])
        r["identifiers"] = m["identifiers"] | r["identifiers"]
        r["customer_id"] = r["customer_id"] or m["customer_id"]
        r["anonymous_ids"] = distinct([*r["anonymous_ids"], *m["anonymous_ids"]])
        r["platforms"] = distinct([*r["platforms"], *m["platforms"]])
        r["first_seen"] = min(r["first_seen"], m["first_seen"])
        r["last_seen"] = max(r["last_seen"], m["last_seen"])
        r["merged_uids"] = distinct([*r["merged_uids"], m["uid"], *m["merged_uids"]])
        r["aliases"] = [list(a) for a in dict.fromkeys(map(tuple, [*r["aliases"], *m["aliases"]]))]
        m["merged_into"] = r["uid"]
        detail = {
            "merged_user": m["uid"],
            "retained_user": r["uid"],
            "merged_customer_id": m["customer_id"],
            "retained_customer_id": r["customer_id"],
        }
        snapshot = self._snapshot(ws, dict(m, aliases=[]), save=False)
        return [
            self._system_event(ws, r, MERGED_EVENT, m["uid"], detail, at),
            self._system_event(ws, m, MERGE_EVENT, r["uid"], detail, at),
            snapshot,
        ]

    def _take_devices(self, ws: str, root: str, book: dict[str, Any], moving: dict[str, Any]) -> None:
        """Devices of merged users join the root's book (up to the per-user cap) and its device index."""
        if not moving:
            return
        for device_id, device in moving.items():
            if device_id not in book and len(book) >= MAX_DEVICES_PER_USER:
                self._unindex_device(ws, device)
                continue
            book[device_id] = device
            for kind, value in unique_values(device):
                self.state.device_index.put(keys.device_index_key(ws, kind, value), [root, device_id])
        self.state.devices.put(keys.user_key(ws, root), book)

    def _repoint(self, ws: str, profile: Profile, old: set[str], root: str) -> list[Output]:
        """Index entries naming a merged-away slot name the root: here at once, elsewhere by REPOINT."""
        if not old:
            return []
        messages = []
        for name, value in profile["aliases"]:
            route = identifier_route(ws, name, value)
            if self.local(route):
                key = keys.identity_key(ws, name, value)
                if self.state.identity.get(key) in old:
                    self.state.identity.put(key, root)
            else:
                header = {"ws": ws, "name": name, "value": value, "frm": sorted(old), "to": root}
                messages.append(self._message(protocol.REPOINT, header, route))
        return messages

    # -- the protocol ----------------------------------------------------------------------------------

    def on_message(self, message: protocol.Message) -> list[Output]:
        """A protocol message other than FORWARD and the state moves (those are the lane's)."""
        self.run = None
        handler = self.protocol_handlers.get(message.kind)
        if handler is None:
            raise Rejection(f"protocol message {message.kind!r} is not handled here")
        route = self._route_of(message)
        if not self.local(route):  # sent by a worker that still counted fewer partitions: pass it on
            return [self._message(message.kind, message.header, route, message.payload)]
        return handler(message.header)

    @staticmethod
    def _route_of(message: protocol.Message) -> str:
        """The identifier or slot whose partition must apply a protocol message."""
        h = message.header
        if message.kind in (protocol.CLAIM, protocol.REPOINT, protocol.RELEASE):
            return identifier_route(h["ws"], h["name"], h["value"])
        if message.kind == protocol.MERGE:  # at the retained user's customer_id entry
            return identifier_route(h["ws"], CUSTOMER_ID, h["value"])
        return str(h["hi"] if message.kind == protocol.SHIP else h["to"])

    def _on_claim(self, h: dict[str, Any]) -> list[Output]:
        """At the identifier's partition: the value resolves to the claiming slot, or the two users merge."""
        ws, name, value, slot = h["ws"], h["name"], h["value"], h["slot"]
        key = keys.identity_key(ws, name, value)
        owner = self._follow(ws, self.state.identity.get(key))
        if owner is None:
            self.state.identity.put(key, slot)
            return []
        if owner == slot:
            return []
        if not self._count_merge(ws, name, value):
            return []  # at MoEngage's cap of 50 users per value: the value stays with its owner
        lo, hi = min(owner, slot), max(owner, slot)
        self.state.identity.put(key, lo)
        return [self._message(protocol.SHIP, {"ws": ws, "hi": hi, "lo": lo}, hi)]

    def _on_ship(self, h: dict[str, Any]) -> list[Output]:
        """At the larger slot's partition: its user travels to the smaller slot, a pointer stays."""
        ws, hi, lo = h["ws"], h["hi"], h["lo"]
        stored = self.state.users.get(keys.user_key(ws, hi))
        if stored is None:
            return []
        if is_pointer(stored):
            target = stored["forward"]
            if target == lo:
                return []  # shipped already (a replay)
            lo2, hi2 = min(target, lo), max(target, lo)
            return [self._message(protocol.SHIP, dict(h, hi=hi2, lo=lo2), hi2)]
        if is_erased(stored):
            return []  # deleted meanwhile: nothing to merge
        devices = self.state.devices.get(keys.user_key(ws, hi)) or {}
        for device in devices.values():
            self._unindex_device(ws, device)
        self.state.devices.delete(keys.user_key(ws, hi))
        self.state.users.put(keys.user_key(ws, hi), _pointer(lo, stored))
        header = {"ws": ws, "frm": hi, "to": lo, "profile": stored, "devices": devices}
        if h.get("retain") is not None:
            header["retain"] = h["retain"]
        return [self._message(protocol.CARRY, header, lo)]

    def _on_carry(self, h: dict[str, Any]) -> list[Output]:
        """At the smaller slot's partition: the carried user is merged in (or passed on along pointers)."""
        ws, frm, to = h["ws"], h["frm"], h["to"]
        root = self._follow(ws, to)
        if root is None:  # the slot's user was deleted meanwhile (else cannot happen): kept rather than lost
            carried = dict(h["profile"], slot=to)
            erased = self.state.users.get(keys.user_key(ws, to))
            carried["generation"] = max(_generation(carried), _generation(erased))
            self._save(ws, carried)
            self._take_devices(ws, to, {}, h["devices"])
            return [self._snapshot(ws, carried)]
        if not self.local(root):
            return [self._message(protocol.CARRY, dict(h, to=root), root)]
        profile = self._profile(ws, root)
        if frm == root or frm in profile.get("absorbed", []):
            return []  # merged already (a replay)
        at = int(h["profile"].get("last_seen") or self.clock())
        rules = self.directory.rules(ws)
        return self._merge_here(ws, rules, [profile, h["profile"]], h["devices"], at, h.get("retain"))

    def _on_repoint(self, h: dict[str, Any]) -> list[Output]:
        key = keys.identity_key(h["ws"], h["name"], h["value"])
        if self.state.identity.get(key) in h["frm"]:
            self.state.identity.put(key, h["to"])
        return []

    # -- requests (processors.requests) ---------------------------------------------------------------

    def _merge_request(
        self, ws: str, record: dict[str, Any], rules: IdentityRules, ids: Ids, raw: Any, slot: str | None
    ) -> list[Output]:
        return requests.merge_request(self, ws, record, slot)

    def _delete_request(
        self, ws: str, record: dict[str, Any], rules: IdentityRules, ids: Ids, raw: Any, slot: str | None
    ) -> list[Output]:
        return requests.delete_request(self, ws, record, slot)

    def _device_opt_out(
        self, ws: str, record: dict[str, Any], rules: IdentityRules, ids: Ids, raw: Any, slot: str | None
    ) -> list[Output]:
        return requests.device_opt_out(self, ws, record, slot)

    def _on_merge_request(self, h: dict[str, Any]) -> list[Output]:
        return requests.on_merge_request(self, h)

    def _on_release(self, h: dict[str, Any]) -> list[Output]:
        return requests.on_release(self, h)

    def _follow(self, ws: str, slot: str | None) -> str | None:
        """The slot a user lives at now: forward pointers on this partition followed."""
        for _ in range(MAX_POINTER_HOPS):
            if slot is None or not self.local(slot):
                return slot
            stored = self.state.users.get(keys.user_key(ws, slot))
            if is_erased(stored):
                return None  # its user was deleted: the slot names no one
            if not is_pointer(stored):
                return slot
            slot = str(stored["forward"])
        raise Rejection(f"user pointers of slot {slot!r} do not end")

    # -- devices -------------------------------------------------------------------------------------

    def _device(
        self,
        ws: str,
        record: dict[str, Any],
        rules: IdentityRules,
        ids: Ids,
        raw: dict[str, Any] | None,
        slot: str | None,
    ) -> list[Output]:
        if slot is None:
            raise Rejection(
                f"devices can be created for existing users only: no user has {ids[0][0]} {ids[0][1]!r}"
            )
        device_id = record.get("device_id") or ""
        if not device_id.strip():
            raise Rejection("device_id is required")
        attributes = device_attributes(record.get("attributes_json") or "{}")
        book = dict(self.state.devices.get(keys.user_key(ws, slot)) or {})
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
        touched = {slot}
        if old is not None:
            stale = set(unique_values(old)) - set(unique_values(device))
            for kind, value in stale:
                self.state.device_index.delete(keys.device_index_key(ws, kind, value))
        for kind, value in unique_values(device):
            index_key = keys.device_index_key(ws, kind, value)
            holder = self.state.device_index.get(index_key)
            if holder is not None and holder != [slot, device_id]:
                touched.add(self._remove_device(ws, holder[0], holder[1], keep=(slot, device_id)))
                if holder[0] == slot:
                    book.pop(holder[1], None)
            self.state.device_index.put(index_key, [slot, device_id])
        book[device_id] = device
        self.state.devices.put(keys.user_key(ws, slot), book)
        profile = self._profile(ws, slot)
        profile["last_seen"] = max(profile["last_seen"], received)
        self._save(ws, profile)
        return [self._snapshot(ws, self._profile(ws, s)) for s in sorted(touched)]

    def _remove_device(self, ws: str, slot: str, device_id: str, keep: tuple[str, str]) -> str:
        """A device whose device_id, push_id, moe_gaid or idfv is taken over by a new device is deleted."""
        book = dict(self.state.devices.get(keys.user_key(ws, slot)) or {})
        device = book.pop(device_id, None)
        if device is not None:
            self._unindex_device(ws, device, keep)
            self.state.devices.put(keys.user_key(ws, slot), book)
        return slot

    def _unindex_device(self, ws: str, device: dict[str, Any], keep: tuple[str, str] | None = None) -> None:
        for kind, value in unique_values(device):
            index_key = keys.device_index_key(ws, kind, value)
            holder = self.state.device_index.get(index_key)
            if holder is not None and tuple(holder) != keep and holder[1] == device["device_id"]:
                self.state.device_index.delete(index_key)

    # -- events --------------------------------------------------------------------------------------

    def _event(
        self,
        ws: str,
        record: dict[str, Any],
        rules: IdentityRules,
        ids: Ids,
        raw: dict[str, Any] | None,
        slot: str | None,
    ) -> list[Output]:
        event_ms = to_ms(record["user_time"])
        outputs: list[Output] = []
        if slot is None:
            here = [pair for pair in ids if self.local(identifier_route(ws, *pair))]
            owners = self._owners(ws, here[1:])
            found = next((s for s in owners.values() if self.local(s)), None)
            if found is not None:
                profile = self._profile(ws, found)
            else:
                profile = self._new_profile(ws, identifier_route(ws, *ids[0]), event_ms)
                self._take_identifiers(profile, ids)
                outputs += self._claim(ws, profile, ids, owners)
                self._save(ws, profile)
                outputs.append(self._snapshot(ws, profile))
        else:
            stored = self.state.users.get(keys.user_key(ws, slot))
            if stored is None:
                # The identity index knows the user, its profile is missing: state restored after a crash
                # in the middle of a batch's changelog writes (see processors.lane). The event is kept:
                # the profile is made again at the same slot (so with the same uid).
                profile = self._new_profile(ws, slot, event_ms)
                self._take_identifiers(profile, ids)
                profile["aliases"] = [list(pair) for pair in ids if self._first_owner(ws, [pair]) == slot]
                self._save(ws, profile)
                outputs.append(self._snapshot(ws, profile))
            else:
                profile = stored
            if event_ms > profile["last_seen"] + LAST_SEEN_RESOLUTION_MS:
                profile = dict(profile, last_seen=event_ms)  # shallow copy: the cached value stays intact
                self._save(ws, profile)
        device_id = record.get("device_id") or record.get("customer_id") or record.get("anonymous_id")
        book = self.state.devices.get(keys.user_key(ws, profile["slot"])) or {}
        device = book.get(device_id) if device_id else None
        outputs.append(self._enriched(ws, record, profile, device, event_ms))
        return outputs

    def _enriched(
        self, ws: str, record: dict[str, Any], profile: Profile, device: dict[str, Any] | None, event_ms: int
    ) -> Output:
        value = self._user_fields(ws, profile, device)
        value.update(zip(RUN_VARYING, self._event_values(record, profile, device, event_ms), strict=True))
        return Output(EVENTS, keys.topic_key(ws, profile["uid"]), "EnrichedEvent", value)

    def _user_fields(self, ws: str, profile: Profile, device: dict[str, Any] | None) -> dict[str, Any]:
        """The EnrichedEvent fields of the user and device (:data:`RUN_BOUND`: a run binds them once)."""
        return {
            "workspace_id": ws,
            "event_source": "MOENGAGE",
            "uid": profile["uid"],
            "customer_id": profile["customer_id"],
            "user_attributes_json": self._user_json(profile),
            "device_attributes_json": self._device_json(device),
        }

    def _encoded_event(self, run: EventRun, record: dict[str, Any], event_ms: int) -> Output:
        """:meth:`_enriched` written straight to Avro with the run's bound encoder (the same bytes: tested
        in tests/processors/test_event_runs.py); its ``record`` holds only what counts and logs read."""
        values = self._event_values(record, run.profile, run.device, event_ms)
        return self._event_output(run, run.encode(*values), values[0], values[2])  # type: ignore[misc]

    @staticmethod
    def _event_output(run: EventRun, value: bytes, event_uuid: str, code: str) -> Output:
        about = {
            "event_uuid": event_uuid,
            "event_code": code,
            "workspace_id": run.ws,
            "uid": run.profile["uid"],
        }
        return Output(EVENTS, run.key, "EnrichedEvent", about, encoded=value)

    def _event_values(
        self, record: dict[str, Any], profile: Profile, device: dict[str, Any] | None, event_ms: int
    ) -> tuple[Any, ...]:
        """The EnrichedEvent fields an event writes itself, in :data:`RUN_VARYING`'s order (a tuple: a
        run's encoder takes them by position, cheaper than by name); its user's fields are bound."""
        code = record["action"]
        text = record.get("attributes_json") or "{}"
        try:
            attributes, standard = jsoncodec.loads_standard(text)
        except ValueError as exc:
            raise Rejection(f"event attributes_json is not valid JSON: {exc}") from exc
        if not isinstance(attributes, dict):
            raise Rejection("event attributes_json must be a JSON object")
        known = CAMPAIGN_EVENTS.get(code)
        push_id = email_id = mobile_number = None
        if known is None:
            name, kind = code, USER_ACTION_EVENT
            # A user's own event keeps its attributes as they were written (the gateway and the importer
            # write compact JSON, so this is what writing them again would give, without its cost).
            attributes_json = text if standard else jsoncodec.dumps(attributes)
        else:
            name, via, kind = known[0], known[1], CAMPAIGN_EVENT
            attributes = {k: v for k, v in attributes.items() if k not in UNSUPPORTED_CAMPAIGN_ATTRIBUTES}
            attributes_json = jsoncodec.dumps(attributes)
            if via == "Push":
                push_id = _first(attributes.get("push_id"), (device or {}).get("push_id"))
            elif via == "Email":
                email_id = _first(attributes.get("email_id"), profile["attributes"].get("u_em"))
            elif via == "SMS":
                mobile_number = _first(attributes.get("mobile_number"), profile["attributes"].get("u_mb"))
        return (
            record["event_uuid"],
            name,
            code,
            event_ms // 1000,
            kind,
            attributes_json,
            push_id,
            email_id,
            mobile_number,
            record.get("platform"),
            to_ms(record["received_at"]),
            self.clock(),
        )

    def _user_json(self, profile: Profile) -> str:
        """The user attributes an event carries, as JSON: made once per profile version, not per event (a
        stored profile's attributes are never changed in place: every update works on a copy)."""
        attributes, uid = profile["attributes"], profile["uid"]
        cached = self._json_cache.get(("u", profile["slot"]))
        if cached is not None and cached[0] is attributes and cached[1] == uid:
            return cached[2]
        text = jsoncodec.dumps(attributes | {"moengage_user_id": uid})
        self._remember(("u", profile["slot"]), (attributes, uid, text))
        return text

    def _device_json(self, device: dict[str, Any] | None) -> str:
        """The device attributes an event carries, as JSON, once per device version (device records are
        replaced, never changed in place)."""
        if device is None:
            return "{}"
        key = ("d", device.get("moengage_device_id") or device.get("device_id"))
        cached = self._json_cache.get(key)
        if cached is not None and cached[0] is device:
            return cached[2]
        text = jsoncodec.dumps({k: v for k, v in device.items() if k not in ("created_at", "updated_at")})
        self._remember(key, (device, None, text))
        return text

    def _remember(self, key: tuple[str, Any], entry: tuple[Any, Any, str]) -> None:
        if len(self._json_cache) >= JSON_CACHE_SIZE:
            self._json_cache.clear()
        self._json_cache[key] = entry

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

    def _owners(self, ws: str, ids: Ids) -> dict[tuple[str, str], str]:
        """The slots (pointers followed) that these local identifier values resolve to."""
        owners = {}
        for name, value in ids:
            slot = self._follow(ws, self.state.identity.get(keys.identity_key(ws, name, value)))
            if slot is not None:
                owners[(name, value)] = slot
        return owners

    def _first_owner(self, ws: str, ids: Ids) -> str | None:
        """The slot of the record's highest-priority identifier that is known here."""
        for name, value in ids:
            slot = self.state.identity.get(keys.identity_key(ws, name, value))
            if slot is not None:
                return str(slot)
        return None

    def _new_profile(self, ws: str, slot: str, at: int) -> Profile:
        """A new user at ``slot``; its uid is derived from the slot, so a replay makes the same one. A slot
        whose user was deleted or merged away has a generation: its next user gets another uid."""
        stored = self.state.users.get(keys.user_key(ws, slot))
        generation = _generation(stored) + 1 if is_erased(stored) or is_pointer(stored) else 0
        return {
            "uid": keys.new_uid(ws, slot, generation),
            "generation": generation,
            "slot": slot,
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
            "absorbed": [],
            "revision": 0,
        }

    def _profile(self, ws: str, slot: str) -> Profile:
        """A copy of the stored profile, so a rejected record cannot leave a half-changed cached one."""
        stored = self.state.users.get(keys.user_key(ws, slot))
        if stored is None or is_pointer(stored):
            raise Rejection(f"identity index points at unknown user slot {slot}")
        return jsoncodec.loads(jsoncodec.dumps_bytes(stored))

    def _save(self, ws: str, profile: Profile) -> None:
        self.state.users.put(keys.user_key(ws, profile["slot"]), profile)

    def _snapshot(self, ws: str, profile: Profile, save: bool = True) -> Output:
        """The UserProfile record published to the compacted profiles topic."""
        profile["revision"] += 1
        book: dict[str, Any] = {}
        if save:
            self._save(ws, profile)
            book = self.state.devices.get(keys.user_key(ws, profile["slot"])) or {}
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


def _generation(stored: Any) -> int:
    return int(stored.get("generation", 0)) if isinstance(stored, dict) else 0


def _pointer(root: str, profile: Profile) -> dict[str, Any]:
    """What stays at a merged-away slot: where its user went, its uid, and its generation (so a new user
    made at the slot after the group is deleted gets a uid of its own)."""
    return {"forward": root, "uid": profile["uid"], "generation": _generation(profile)}


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
