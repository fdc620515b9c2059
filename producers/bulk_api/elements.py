"""Validation of ``customer``, ``event`` and ``device`` elements into encoded Kafka messages.

Each element is checked field by field with MoEngage's error texts for customer, event and device elements
and turned into Avro records: one UserUpsert per customer, one DeviceUpsert per device, one EventRecord per
action.
A bad element raises :class:`ApiError`; the caller decides whether that rejects the request or only
the element (``GatewaySettings.bad_elements``).

Encoding (the gateway's hot path): the fields every record of a request shares (workspace, request id,
receive time, source, client address) are encoded once per request by :class:`SplicedRecord`
templates (``Encoders.spliced``), and each record's own fields are spliced in by name (keyword
arguments of the compiled encoder), without building a record dict; the bytes are fastavro's (checked at
start-up and in the tests). When a template raises, fastavro encodes the record, so an encoding error
reads exactly as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import orjson

from inflow.config.identifiers import BLOCKED_ATTRIBUTE_NAMES
from inflow.producers.bulk_api.context import RequestContext
from inflow.producers.bulk_api.exceptions import ApiError
from inflow.producers.bulk_api.messages import Texts, invalid, missing, wrong_type
from inflow.producers.bulk_api.settings import GatewaySettings
from inflow.producers.bulk_api.times import (
    MAX_MS,
    MAX_OFFSET_S,
    MS_THRESHOLD,
    ParsedTime,
    TimeValueError,
    derive_times,
    parse_time,
)
from inflow.schemas.avro_template import SplicedRecord
from inflow.schemas.exceptions import SerdeError
from inflow.schemas.serde import AvroSerde

ELEMENT_TYPES = ("customer", "event", "device")
USER_PLATFORMS = {"android": "ANDROID", "ios": "iOS", "web": "web", "tv": "TV"}
EVENT_PLATFORMS = USER_PLATFORMS | {"unknown": "unknown"}
TV_OS_TYPES = ("ROKU", "WebOS", "AndroidTV", "tvOS", "Tizen", "FireOS", "VizioTV", "Xbox")
ARRAY_OPERATORS = ("addValueToArrayField", "removeValueFromArrayField")
# System attributes that legitimately start with the reserved moe_ prefix (MoEngage's standard user and
# device attributes).
SYSTEM_MOE_NAMES = frozenset(
    {
        "moe_mobile",
        "moe_gaid",
        "moe_unsubscribe",
        "moe_spam",
        "moe_hard_bounce",
        "moe_wa_subscription",
        "moe_sms_subscription",
        "moe_email_optin_status",
        "moe_em_unsub_categories",
        "moe_sub_w",
        "moe_push_opted",
        "moe_push_provisional_opted",
        "moe_os_type",
        "moe_time_format",
        "moe_time_timezone",
        "moe_islat",
    }
)
UNSET_TYPES = ("equals", "prefix", "suffix", "contains")

# What every record of one request shares (encoded once per request), and what varies per record; the
# encoders take both by name. anonymous_id and origin are always null for API records (their schema
# default).
BOUND_FIELDS = ("workspace_id", "request_id", "received_at", "source", "client_ip")
USER_FIELDS = (
    "event_uuid",
    "customer_id",
    "user_identifiers",
    "update_existing_only",
    "attributes_json",
    "unset_attributes_json",
)
DEVICE_FIELDS = ("event_uuid", "customer_id", "device_id", "attributes_json")
EVENT_FIELDS = (
    "event_uuid",
    "customer_id",
    "user_identifiers",
    "device_id",
    "action",
    "attributes_json",
    "platform",
    "moe_os_type",
    "app_version",
    "user_time",
    "current_time",
    "user_timezone_offset",
)
# Fields whose values repeat across the records of one request (one user's actions): encoded once each.
REPEATED_FIELDS = ("customer_id", "device_id", "action", "platform", "moe_os_type", "app_version")
_SAMPLE_BOUND = {
    "workspace_id": "W",
    "request_id": "abcdefgh",
    "received_at": 1_700_000_000_000,
    "source": "api",
    "client_ip": "127.0.0.1",
}
_SAMPLES = {
    "UserUpsert": _SAMPLE_BOUND
    | {
        "event_uuid": "u",
        "customer_id": "c",
        "user_identifiers": {"email": "e"},
        "update_existing_only": True,
        "attributes_json": "{}",
        "unset_attributes_json": "[]",
    },
    "DeviceUpsert": _SAMPLE_BOUND
    | {"event_uuid": "u", "customer_id": "c", "device_id": "d", "attributes_json": "{}"},
    "EventRecord": _SAMPLE_BOUND
    | {
        "event_uuid": "u",
        "customer_id": "c",
        "user_identifiers": {"email": "e"},
        "device_id": "d",
        "action": "a",
        "attributes_json": "{}",
        "platform": "ANDROID",
        "moe_os_type": None,
        "app_version": "1",
        "user_time": 1_700_000_000_000,
        "current_time": 1_700_000_000_000,
        "user_timezone_offset": -19800,
    },
}


INGEST_TOPIC = "ingest.records"
# Event platforms as clients write them (canonical, lower and upper case) to their canonical names: one
# lookup for the common spellings before the case-insensitive one.
_EVENT_PLATFORM_SPELLINGS = {
    spelling: canonical
    for canonical in EVENT_PLATFORMS.values()
    for spelling in (canonical, canonical.lower(), canonical.upper())
}


class Outgoing(NamedTuple):
    """One encoded message: catalogue topic short name, key, Avro value."""

    topic: str
    key: bytes
    value: bytes


class RecordEncoder(Protocol):
    """Binds one request's shared fields; the result encodes one record from its varying fields."""

    def bind(self, **bound: Any) -> Callable[..., bytes]: ...

    def plain_bound(self, **bound: Any) -> Callable[..., bytes]: ...


class _DictRecord:
    """A ``record dict -> bytes`` encoder behind the :class:`RecordEncoder` interface."""

    def __init__(self, encode: Callable[[Mapping[str, Any]], bytes], varying: tuple[str, ...]) -> None:
        self.encode, self.varying = encode, varying

    def bind(self, **bound: Any) -> Callable[..., bytes]:
        base = {"anonymous_id": None, "origin": None} | bound
        encode = self.encode

        def encode_one(**values: Any) -> bytes:
            return encode(base | values)

        return encode_one

    plain_bound = bind


@dataclass(frozen=True, slots=True)
class Encoders:
    """Avro encoders of the three ingest records: ``record dict -> bytes`` callables (fastavro), or
    :class:`RecordEncoder` templates that encode the request's shared fields once (:meth:`spliced`)."""

    user: Callable[[Mapping[str, Any]], bytes] | RecordEncoder
    device: Callable[[Mapping[str, Any]], bytes] | RecordEncoder
    event: Callable[[Mapping[str, Any]], bytes] | RecordEncoder

    @classmethod
    def spliced(cls, serde: AvroSerde, topic: Callable[[str], str]) -> Encoders:
        """Templates checked byte for byte against fastavro (which they fall back to if they differ)."""

        def make(name: str, short_topic: str, varying: tuple[str, ...]) -> SplicedRecord:
            return SplicedRecord(
                serde, name, topic(short_topic), BOUND_FIELDS, varying, _SAMPLES[name], REPEATED_FIELDS
            )

        return cls(
            user=make("UserUpsert", "ingest.records", USER_FIELDS),
            device=make("DeviceUpsert", "ingest.records", DEVICE_FIELDS),
            event=make("EventRecord", "ingest.records", EVENT_FIELDS),
        )


def _record_encoder(encoder: Any, varying: tuple[str, ...]) -> RecordEncoder:
    return encoder if hasattr(encoder, "bind") else _DictRecord(encoder, varying)


class _Bound(NamedTuple):
    """The three encoders of one request, and their fastavro twins' sources for error messages."""

    user: Callable[..., bytes]
    device: Callable[..., bytes]
    event: Callable[..., bytes]
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Validated:
    """The records of one good element (all to ``ingest.records`` under one key: the element's user) and
    what it counts against the rate limits."""

    key: bytes
    values: list[bytes]
    users: int
    events: int

    @property
    def messages(self) -> list[Outgoing]:
        return [Outgoing(INGEST_TOPIC, self.key, value) for value in self.values]


def dumps(value: Any) -> str:
    """Compact JSON text (orjson: several times faster than json on this hot path)."""
    return orjson.dumps(value).decode()


# Integers beyond this magnitude are parsed as floats (the JSON parser keeps 64-bit integers only) and a
# float holds integers exactly only up to 2**53: two different large ids would read as the same number.
EXACT_NUMBER_LIMIT = 2**53


def number_text(attribute: str, value: int | float) -> str:
    """A number's decimal text, as MoEngage converts identifier values to strings; a number that cannot
    be kept exactly is refused (400) rather than stored rounded, which would merge different users."""
    if isinstance(value, float) and not (abs(value) < EXACT_NUMBER_LIMIT):
        raise invalid(
            attribute,
            f"{attribute} is a number too large to keep exactly; send it as a string",
            "TypeError",
        )
    return str(value)


def as_text(attribute: str, value: Any) -> str:
    """Strings as is; numbers converted, as MoEngage converts identifier values to strings."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return number_text(attribute, value)
    raise wrong_type(attribute, "string")


def identifier_values(source: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    """Non-blank identifier values converted to strings; MoEngage never resolves a user by a blank one."""
    found = {}
    for name in names:
        value = source.get(name)
        if value is None or isinstance(value, dict | list | bool):
            continue
        text = number_text(name, value) if isinstance(value, int | float) else str(value)
        if text.strip():
            found[name] = text
    return found


class ElementValidator:
    """Turns elements into messages for one gateway; pure apart from the encoders it calls."""

    def __init__(self, settings: GatewaySettings, encoders: Encoders) -> None:
        self.settings = settings
        self.encoders = encoders
        self.blocked_ids = frozenset(v.lower() for v in settings.blocked_customer_ids)
        self.future_tolerance_ms = settings.future_event_tolerance_s * 1000
        self._by_type = {"customer": self.customer, "event": self.event, "device": self.device}
        self._user = _record_encoder(encoders.user, USER_FIELDS)
        self._device = _record_encoder(encoders.device, DEVICE_FIELDS)
        self._event = _record_encoder(encoders.event, EVENT_FIELDS)

    def bind(self, ctx: RequestContext) -> _Bound:
        """The request's encoders, made once per request: its shared fields are encoded only once."""
        bound = ctx.bound
        if bound is None:
            values = {
                "workspace_id": ctx.workspace_id,
                "request_id": ctx.request_id,
                "received_at": ctx.received_ms,
                "source": "api",
                "client_ip": ctx.client_ip,
            }
            bound = ctx.bound = _Bound(
                self._user.bind(**values), self._device.bind(**values), self._event.bind(**values), values
            )
        return bound  # type: ignore[no-any-return]

    def element(self, el: Any, ctx: RequestContext, identifiers: tuple[str, ...], texts: Texts) -> Validated:
        """Any element of a Bulk request: dispatch on its case-sensitive ``type``."""
        if not isinstance(el, dict):
            raise wrong_type("elements", "list of objects")
        kind = el.get("type")
        handler = self._by_type.get(kind) if isinstance(kind, str) else None
        if handler is None:
            raise invalid("type", "'type in elements should be customer/event/device")
        return handler(el, ctx, identifiers, texts)

    # customer ------------------------------------------------------------------------------------------
    def customer(
        self, el: dict[str, Any], ctx: RequestContext, identifiers: tuple[str, ...], texts: Texts
    ) -> Validated:
        attributes = self._object(el, "attributes")
        attributes = self._user_attributes(el, attributes)
        ids = identifier_values(attributes, identifiers)
        if el.get("user_identifiers") is not None:
            given = self._object(el, "user_identifiers")
            ids |= identifier_values(given, tuple(given))
        customer_id = self._customer_id(el, texts, required=not (identifiers and ids))
        update_only = el.get("update_existing_only", False)
        if not isinstance(update_only, bool):
            raise wrong_type("update_existing_only", "boolean")
        unset = self._unset_attributes(el)
        uuid = ctx.next_event_uuid()
        attributes_json = self._json("attributes", attributes)
        unset_json = None if unset is None else self._json("unset_attributes", unset)
        key = routing_key(ctx.workspace_id, customer_id, ids)
        value = self._encoded(
            self.bind(ctx).user,
            self._user,
            ctx,
            event_uuid=uuid,
            customer_id=customer_id,
            user_identifiers=ids,
            update_existing_only=update_only,
            attributes_json=attributes_json,
            unset_attributes_json=unset_json,
        )
        return Validated(key, [value], 1, 0)

    def _user_attributes(self, el: dict[str, Any], attributes: dict[str, Any]) -> dict[str, Any]:
        if "platforms" in el:  # MoEngage also accepts platforms beside attributes
            attributes = {**attributes, "platforms": el["platforms"]}
        for name in attributes:
            if name[:1] in "mMi_":  # moe_ prefix and the blocked id / _id / empty names
                self._check_name(name, "attributes", user=True)
        if "platforms" in attributes:
            attributes["platforms"] = self._platforms(attributes["platforms"])
        self._array_operators(attributes)
        return attributes

    def _platforms(self, value: Any) -> list[dict[str, str]]:
        if not isinstance(value, list):
            raise wrong_type("platforms", "list")
        out = []
        for item in value:
            if not isinstance(item, dict):
                raise wrong_type("platforms", "list of objects")
            name = item.get("platform")
            canonical = USER_PLATFORMS.get(name.lower()) if isinstance(name, str) else None
            if canonical is None:
                raise invalid("platform", "platform should be one of ANDROID/iOS/web/TV")
            active = item.get("active", "true")
            if isinstance(active, bool):
                active = "true" if active else "false"
            if not isinstance(active, str) or active.lower() not in ("true", "false"):
                raise invalid("active", 'active should be "true" or "false"')
            out.append({**item, "platform": canonical, "active": active.lower()})
        return out

    def _array_operators(self, attributes: dict[str, Any]) -> None:
        """MoEngage's array operators: no add and remove of one attribute, no set and add/remove of one
        attribute, no reserved names."""
        touched: dict[str, str] = {}
        for operator in ARRAY_OPERATORS:
            if operator not in attributes:
                continue
            spec = attributes[operator]
            if not isinstance(spec, dict):
                raise wrong_type(operator, "object")
            for name, values in spec.items():
                if name in touched:
                    msg = f"Cannot add and remove '{name}' at the same time"
                    raise invalid("addValueToArrayField", msg, "ArrayFieldError")
                if name in attributes:
                    raise invalid(
                        operator, f"Cannot set and update '{name}' at the same time", "ArrayFieldError"
                    )
                if name == "platforms" or name.lower().startswith("moe_") or name in BLOCKED_ATTRIBUTE_NAMES:
                    msg = f"Reserved attribute '{name}' cannot be used with {operator}"
                    raise invalid(operator, msg, "ArrayFieldError")
                if isinstance(values, dict):
                    raise wrong_type(operator, "object of attribute names to values or lists")
                touched[name] = operator

    def _unset_attributes(self, el: dict[str, Any]) -> list[dict[str, Any]] | None:
        rules = el.get("unset_attributes")
        if rules is None:
            return None
        if not isinstance(rules, list):
            raise wrong_type("unset_attributes", "list")
        out = []
        for rule in rules:
            if not isinstance(rule, dict):
                raise wrong_type("unset_attributes", "list of objects")
            if rule.get("type") not in UNSET_TYPES:
                raise invalid(
                    "unset_attributes", "unset_attributes type should be equals/prefix/suffix/contains"
                )
            attr = rule.get("attr")
            if not isinstance(attr, str) or not attr:
                raise wrong_type("attr", "non-empty string")
            sensitive = rule.get("case_sensitive", True)
            if not isinstance(sensitive, bool):
                raise wrong_type("case_sensitive", "boolean")
            out.append({"type": rule["type"], "attr": attr, "case_sensitive": sensitive})
        return out

    # event ---------------------------------------------------------------------------------------------
    def event(
        self, el: dict[str, Any], ctx: RequestContext, identifiers: tuple[str, ...], texts: Texts
    ) -> Validated:
        raw_ids = el.get("user_identifiers")
        ids: dict[str, str] = {}
        if raw_ids is not None:
            given = self._object(el, "user_identifiers")
            ids = identifier_values(given, tuple(given))
        customer_id = self._customer_id(el, texts, required=not (identifiers and ids))
        device_id = el.get("device_id")
        if device_id is not None:
            device_id = as_text("device_id", device_id)
        actions = el.get("actions")
        if actions is None:
            raise missing("actions", texts.actions_missing)
        if not isinstance(actions, list):
            raise wrong_type("actions", "list")
        if not actions:
            raise missing("actions", texts.actions_empty)
        key = routing_key(ctx.workspace_id, customer_id, ids)
        encode = self.bind(ctx).event
        values = []
        latest_ms = ctx.received_ms + self.future_tolerance_ms
        spellings, next_uuid = _EVENT_PLATFORM_SPELLINGS, ctx.event_uuids
        for action in actions:
            # The common action, checked inline: a name without the m/M that could start moe_, attribute
            # names likewise, a known platform spelling, no moe_os_type, a string app_version, an integer
            # offset in range, an integer current_time in range and no user_time. Anything else, and any
            # doubt, goes to _action, which checks every rule in order and gives the error.
            if action.__class__ is dict:
                name = action.get("action")
                attributes = action.get("attributes")
                platform = action.get("platform")
                version = action.get("app_version")
                offset = action.get("user_timezone_offset")
                current = action.get("current_time")
                if (
                    name.__class__ is str
                    and name[:1] not in "mM"  # also the empty name
                    and (attributes is None or attributes.__class__ is dict)
                    and (platform is None or (platform.__class__ is str and platform in spellings))
                    and (version is None or version.__class__ is str)
                    and (
                        offset is None
                        or (offset.__class__ is int and -MAX_OFFSET_S <= offset <= MAX_OFFSET_S)
                    )
                    and current.__class__ is int
                    and "moe_os_type" not in action
                    and action.get("user_time") is None
                    and name.strip()
                ):
                    ms = current if not -MS_THRESHOLD < current < MS_THRESHOLD else current * 1000
                    attrs = _plain_attributes_json(attributes)
                    if attrs is not None and 0 <= ms <= MAX_MS and ms <= latest_ms:
                        uuid = next_uuid()
                        if platform is not None:
                            platform = spellings[platform]
                        try:
                            values.append(
                                encode(
                                    event_uuid=uuid,
                                    customer_id=customer_id,
                                    user_identifiers=ids,
                                    device_id=device_id,
                                    action=name,
                                    attributes_json=attrs,
                                    platform=platform,
                                    moe_os_type=None,
                                    app_version=version,
                                    user_time=ms,
                                    current_time=ms,
                                    user_timezone_offset=offset,
                                )
                            )
                            continue
                        except Exception:  # noqa: BLE001, S110 - the full path below encodes it slowly or says why
                            pass
            values.append(self._action(action, texts, ctx, encode, customer_id, ids, device_id))
        return Validated(key, values, 0, len(values))

    def _action(
        self,
        action: Any,
        texts: Texts,
        ctx: RequestContext,
        encode: Callable[..., bytes],
        customer_id: str | None,
        ids: dict[str, str],
        device_id: str | None,
    ) -> bytes:
        """One action's EventRecord, every rule checked in order (fastavro's error if it cannot be
        encoded)."""
        uuid, name, attrs, platform, os_type, version, event_ms, current_ms, offset = self._action_fields(
            action, texts, ctx
        )
        return self._encoded(
            encode,
            self._event,
            ctx,
            event_uuid=uuid,
            customer_id=customer_id,
            user_identifiers=ids,
            device_id=device_id,
            action=name,
            attributes_json=attrs,
            platform=platform,
            moe_os_type=os_type,
            app_version=version,
            user_time=event_ms,
            current_time=current_ms,
            user_timezone_offset=offset,
        )

    def _action_fields(self, action: Any, texts: Texts, ctx: RequestContext) -> tuple[Any, ...]:
        """The varying EventRecord fields of one action: uuid, action, attributes_json, platform,
        moe_os_type, app_version, user_time, current_time, user_timezone_offset."""
        if not isinstance(action, dict):
            raise wrong_type("actions", "list of objects")
        name = action.get("action")
        if name is None:
            raise missing("action", texts.action_missing)
        if not isinstance(name, str):
            raise wrong_type("action", "string")
        if not name.strip():
            raise missing("action", texts.action_empty)
        if name[:1] in "mM":  # only names that may carry the reserved prefix need the full check
            self._check_name(name, "action", user=False)
        attributes = action.get("attributes")
        if attributes is None:
            attributes = {}
        elif not isinstance(attributes, dict):
            raise wrong_type("attributes", "object")
        for attr in attributes:
            if attr[:1] in "mM":  # only names that may carry the reserved prefix need the full check
                self._check_name(attr, "attributes", user=False)
        platform = action.get("platform")
        if platform is not None:
            platform = self._event_platform(platform)
        os_type = action.get("moe_os_type")
        if os_type is not None:
            if platform != "TV":
                raise invalid("moe_os_type", "moe_os_type is allowed only when platform is TV")
            if os_type not in TV_OS_TYPES:
                raise invalid("moe_os_type", "moe_os_type should be one of " + "/".join(TV_OS_TYPES))
        app_version = action.get("app_version")
        if app_version is not None and type(app_version) is not str:
            app_version = as_text("app_version", app_version)
        offset = action.get("user_timezone_offset")
        if type(offset) is int and -MAX_OFFSET_S <= offset <= MAX_OFFSET_S:
            pass  # the common case, checked as below
        elif offset is not None:
            if isinstance(offset, bool) or not isinstance(offset, int | float) or offset != int(offset):
                raise wrong_type("user_timezone_offset", "integer (seconds)")
            offset = int(offset)
            if not -MAX_OFFSET_S <= offset <= MAX_OFFSET_S:
                raise invalid(
                    "user_timezone_offset", "user_timezone_offset should be between -54000 and 54000"
                )
        user_time, current_time = action.get("user_time"), action.get("current_time")
        if user_time is None and type(current_time) is int:
            # The common case of parse_time + derive_times: current_time in epoch s or ms, UTC.
            ms = current_time if not -MS_THRESHOLD < current_time < MS_THRESHOLD else current_time * 1000
            if 0 <= ms <= MAX_MS and ms <= ctx.received_ms + self.future_tolerance_ms:
                return (
                    ctx.next_event_uuid(),
                    name,
                    self._json("attributes", attributes),
                    platform,
                    os_type,
                    app_version,
                    ms,
                    ms,
                    offset,
                )
        times = derive_times(
            None if user_time is None else self._time("user_time", user_time),
            None if current_time is None else self._time("current_time", current_time),
            offset,
            ctx.received_ms,
            self.settings.default_timezone_offset_s,
        )
        if times.event_ms > ctx.received_ms + self.future_tolerance_ms:
            attr = "current_time" if times.current_ms is not None else "user_time"
            raise invalid(attr, "Future dated events are not accepted")
        return (
            ctx.next_event_uuid(),
            name,
            self._json("attributes", attributes),
            platform,
            os_type,
            app_version,
            times.event_ms,
            times.current_ms,
            times.offset_s,
        )

    @staticmethod
    def _event_platform(value: Any) -> str:
        canonical = EVENT_PLATFORMS.get(value.lower()) if isinstance(value, str) else None
        if canonical is None:
            raise invalid("platform", "platform should be one of ANDROID/iOS/web/TV/unknown")
        return canonical

    @staticmethod
    def _time(attribute: str, value: Any) -> ParsedTime:
        try:
            return parse_time(value)
        except TimeValueError as exc:
            msg = f"{attribute} is expected to be epoch seconds, epoch milliseconds or ISO 8601 ({exc})"
            raise ApiError(400, "TypeError", msg, attribute) from exc

    # device --------------------------------------------------------------------------------------------
    def device(
        self, el: dict[str, Any], ctx: RequestContext, identifiers: tuple[str, ...], texts: Texts
    ) -> Validated:
        customer_id = self._customer_id(el, texts, required=True)
        device_id = el.get("device_id")
        if device_id is None:
            raise missing("device_id", texts.not_found("device_id"))
        device_id = as_text("device_id", device_id)
        if not device_id.strip():
            raise missing("device_id", texts.not_found("device_id"))
        if "attributes" not in el:
            raise missing("attributes", texts.not_found("attributes"))
        attributes = self._object(el, "attributes")
        platform = attributes.get("platform")
        if platform is None:
            raise missing("platform", texts.not_found("platform"))
        canonical = USER_PLATFORMS.get(platform.lower()) if isinstance(platform, str) else None
        if canonical is None:
            raise invalid("platform", "platform should be one of ANDROID/iOS/web/TV")
        for name in attributes:
            self._check_name(name, "attributes", user=True)
        uuid = ctx.next_event_uuid()
        attributes_json = self._json("attributes", {**attributes, "platform": canonical})
        key = routing_key(ctx.workspace_id, customer_id, {})
        users = 1 if self.settings.count_devices_as_users else 0
        value = self._encoded(
            self.bind(ctx).device,
            self._device,
            ctx,
            event_uuid=uuid,
            customer_id=customer_id,
            device_id=device_id,
            attributes_json=attributes_json,
        )
        return Validated(key, [value], users, 0)

    # shared --------------------------------------------------------------------------------------------
    def _customer_id(self, el: dict[str, Any], texts: Texts, required: bool) -> str | None:
        value = el.get("customer_id")
        if value is None:
            if required:
                raise missing("customer_id", texts.customer_id_missing)
            return None
        text = as_text("customer_id", value)
        if not text.strip():
            raise missing("customer_id", texts.customer_id_empty)
        if text.strip().lower() in self.blocked_ids:
            raise invalid("customer_id", f"customer_id value '{text}' is blocked", "BlockedValueError")
        return text

    def _check_name(self, name: str, attribute: str, user: bool) -> None:
        """Blocked names (``id``, ``_id``, empty) and MoEngage's reserved ``moe_`` prefix."""
        if user and name in BLOCKED_ATTRIBUTE_NAMES:
            raise invalid(attribute, f"'{name}' is not allowed as a user attribute name")
        if (
            self.settings.reject_reserved_prefix
            and name[:1] in "mM"
            and name[:4].lower() == "moe_"
            and name.lower() not in SYSTEM_MOE_NAMES
        ):
            raise invalid(attribute, f"'{name}' uses the reserved prefix moe_", "ReservedNameError")

    @staticmethod
    def _object(container: dict[str, Any], attribute: str) -> dict[str, Any]:
        value = container.get(attribute)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise wrong_type(attribute, "object")
        return value

    @staticmethod
    def _json(attribute: str, value: Any) -> str:
        try:
            return dumps(value)
        except (orjson.JSONEncodeError, RecursionError) as exc:  # e.g. a lone surrogate, nesting over 254
            raise invalid(attribute, f"{attribute} cannot be stored: {exc}", "TypeError") from exc

    def _encoded(
        self, encode: Callable[..., bytes], record: RecordEncoder, ctx: RequestContext, **fields: Any
    ) -> bytes:
        """``encode(**fields)`` with the request's template; fastavro's bytes or error when it raises."""
        try:
            return encode(**fields)
        except Exception:  # noqa: BLE001 - fastavro's own error (or bytes) decides, see _encode_slowly
            return self._encode_slowly(record, ctx, fields)

    def _encode_slowly(self, record: RecordEncoder, ctx: RequestContext, fields: dict[str, Any]) -> bytes:
        """Encode with fastavro after the request's template raised (e.g. a lone surrogate in a string):
        fastavro's bytes, or its error as the element's 400."""
        try:
            return record.plain_bound(**self.bind(ctx).values)(**fields)
        except SerdeError as exc:  # e.g. a lone surrogate in a string field cannot be UTF-8
            raise ApiError(400, "TypeError", f"element cannot be encoded: {exc}") from exc


def _plain_attributes_json(attributes: dict[str, Any] | None) -> str | None:
    """An action's attributes as JSON when no name starts with m/M (no reserved-prefix check needed);
    None when one may, or when they cannot be written (the full path gives the reason). The JSON is
    searched first: no name can start with m/M when no string in it does."""
    if not attributes:
        return "{}"
    try:
        text = orjson.dumps(attributes).decode()
    except (orjson.JSONEncodeError, RecursionError):
        return None
    if '"m' in text or '"M' in text:
        for name in attributes:
            if name[:1] in "mM":
                return None
    return text


def routing_key(workspace_id: str, customer_id: str | None, identifiers: Mapping[str, str]) -> bytes:
    """``workspace:customer_id``, else ``workspace:name=value`` of the first identifier (keeps order)."""
    if customer_id is not None:
        return f"{workspace_id}:{customer_id}".encode("utf-8", "surrogatepass")
    for name, value in identifiers.items():
        return f"{workspace_id}:{name}={value}".encode("utf-8", "surrogatepass")
    return workspace_id.encode()
