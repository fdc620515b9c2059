"""The gateway's per-request Avro templates write exactly fastavro's bytes, and fail exactly as it does."""

from __future__ import annotations

import io
import json
import random
from datetime import UTC, datetime
from typing import Any

import pytest
from fastavro import schemaless_writer

from bench.gateway_bench import payload
from inflow.producers.bulk_api.context import RequestContext
from inflow.producers.bulk_api.elements import (
    BOUND_FIELDS,
    DEVICE_FIELDS,
    EVENT_FIELDS,
    USER_FIELDS,
    ElementValidator,
    Encoders,
)
from inflow.producers.bulk_api.exceptions import ApiError
from inflow.producers.bulk_api.messages import BULK
from inflow.producers.bulk_api.settings import GatewaySettings
from inflow.schemas.avro_template import MEMO_SIZE, SplicedRecord, long_bytes, string_bytes
from inflow.schemas.serde import AvroSerde

SERDE = AvroSerde()
NOW = datetime.now(UTC)


def plain_encoders() -> Encoders:
    return Encoders(
        SERDE.encoder("UserUpsert", topic="t.users"),
        SERDE.encoder("DeviceUpsert", topic="t.devices"),
        SERDE.encoder("EventRecord", topic="t.events"),
    )


def spliced_encoders() -> Encoders:
    return Encoders.spliced(SERDE, lambda short: "t." + short.split(".")[-1])


def text(rng: random.Random) -> str:
    alphabet = 'aZ09 _-é€😀\x00"\\'
    n = rng.choice([0, 1, 5, 40, 127, 128, 200, 5000])
    return "".join(rng.choice(alphabet) for _ in range(n))


def maybe(rng: random.Random, value: Any) -> Any:
    return None if rng.random() < 0.3 else value


def random_value(rng: random.Random, name: str) -> Any:
    if name in ("received_at", "user_time"):
        return rng.choice([0, 1, 1_700_000_000_000, 253_402_300_799_999, rng.randrange(2**41)])
    if name == "current_time":
        return maybe(rng, rng.choice([0, 63, 64, 1_700_000_000_123]))
    if name == "user_timezone_offset":
        return maybe(rng, rng.choice([0, -1, 63, -64, 64, 19800, -54000, 54000]))
    if name == "update_existing_only":
        return rng.random() < 0.5
    if name == "user_identifiers":
        return {text(rng) or "k": text(rng) for _ in range(rng.choice([0, 1, 3, 70]))}
    if name in (
        "client_ip",
        "customer_id",
        "platform",
        "moe_os_type",
        "app_version",
        "unset_attributes_json",
    ):
        return maybe(rng, text(rng))
    if name == "device_id":
        return text(rng)
    return text(rng)


@pytest.mark.parametrize(
    ("record", "varying"),
    [("UserUpsert", USER_FIELDS), ("DeviceUpsert", DEVICE_FIELDS), ("EventRecord", EVENT_FIELDS)],
)
def test_spliced_records_are_fastavro_byte_for_byte(record: str, varying: tuple[str, ...]) -> None:
    rng = random.Random(record)
    sample = {n: random_value(rng, n) for n in BOUND_FIELDS + varying}
    if record == "DeviceUpsert":
        sample["customer_id"] = "c"
    spliced = SplicedRecord(SERDE, record, "t", BOUND_FIELDS, varying, sample)
    assert spliced.fast
    plain = SERDE.encoder(record, topic="t")
    for _ in range(60):  # requests
        bound = [random_value(rng, n) for n in BOUND_FIELDS]
        encode = spliced.bind(**dict(zip(BOUND_FIELDS, bound, strict=True)))
        slow = spliced.plain_bound(**dict(zip(BOUND_FIELDS, bound, strict=True)))
        for _ in range(20):  # records
            values = [random_value(rng, n) for n in varying]
            expected = plain(
                dict(zip(BOUND_FIELDS, bound, strict=True))
                | dict(zip(varying, values, strict=True))
                | {"anonymous_id": None, "origin": None}
            )
            assert encode(**dict(zip(varying, values, strict=True))) == expected
            assert slow(**dict(zip(varying, values, strict=True))) == expected
            decoded = SERDE.decode(expected, expected=record)[1]
            assert [decoded[n] for n in ("workspace_id", "request_id")] == bound[:2]


def test_unknown_field_types_fall_back_to_fastavro() -> None:
    sample = {
        "workspace_id": "W",
        "gateway_id": "g",
        "window_start": 1_700_000_000_000,
        "counts": {"users": 3},
        "updated_at": 1_700_000_000_001,
    }
    spliced = SplicedRecord(
        SERDE,
        "GatewayRateCount",
        None,
        ("workspace_id", "gateway_id"),
        ("window_start", "counts", "updated_at"),
        sample,
    )
    assert not spliced.fast  # a map of longs is not one of the template's types
    encode = spliced.bind(workspace_id="W", gateway_id="g")
    assert encode(
        window_start=1_700_000_000_000, counts={"users": 3}, updated_at=1_700_000_000_001
    ) == SERDE.encode("GatewayRateCount", sample)


def test_fields_must_exist_or_have_defaults() -> None:
    with pytest.raises(ValueError, match="not in the schema"):
        SplicedRecord(SERDE, "DeviceUpsert", None, BOUND_FIELDS, (*DEVICE_FIELDS, "nope"), {})
    with pytest.raises(ValueError, match="neither given nor have a default"):
        SplicedRecord(SERDE, "DeviceUpsert", None, BOUND_FIELDS, DEVICE_FIELDS[:-2], {})


def bulk_elements() -> list[dict[str, Any]]:
    """The benchmark's realistic mix plus every optional field and time form the validator handles."""
    elements: list[dict[str, Any]] = []
    for seed in range(3):
        elements += json.loads(payload(seed)[0])["elements"]
    elements += [
        {
            "type": "customer",
            "user_identifiers": {"email": "a@b.c", "moe_mobile": 9876543210},
            "update_existing_only": True,
            "attributes": {"addValueToArrayField": {"tags": ["x"]}, "name": "é😀"},
            "unset_attributes": [{"type": "prefix", "attr": "old_"}],
        },
        {"type": "device", "customer_id": 42, "device_id": "d1", "attributes": {"platform": "ios", "x": 1}},
        {
            "type": "event",
            "user_identifiers": {"email": "a@b.c"},
            "actions": [
                {"action": "a"},
                {"action": "b", "user_time": "2024-01-01T10:00:00+05:30"},
                {"action": "c", "user_time": 1_700_000_000, "user_timezone_offset": -3600},
                {"action": "d", "current_time": 1_700_000_000_000, "platform": "tv", "moe_os_type": "ROKU"},
                {
                    "action": "e",
                    "current_time": "1700000000",
                    "app_version": 7,
                    "user_timezone_offset": 19800.0,
                },
                {"action": "f", "current_time": 1_700_000_000.5},
            ],
        },
    ]
    return elements


@pytest.mark.parametrize("client", [None, "203.0.113.7"])
def test_validator_messages_are_the_same_with_templates_and_fastavro(client: str | None) -> None:
    plain = ElementValidator(GatewaySettings(), plain_encoders())
    fast = ElementValidator(GatewaySettings(), spliced_encoders())
    identifiers = ("email",)
    for validator in (plain, fast):  # the templates are real ones, not the fallback
        assert all(getattr(e, "fast", True) for e in (validator._user, validator._device, validator._event))
    assert fast._event.fast  # type: ignore[attr-defined]
    # An Idempotency-Key makes the event_uuids deterministic, so whole messages can be compared.
    ctx_a = RequestContext("W", "rid00001", NOW, client, "idem-1")
    ctx_b = RequestContext("W", "rid00001", NOW, client, "idem-1")
    count = 0
    for el in bulk_elements():
        a = plain.element(el, ctx_a, identifiers, BULK)
        b = fast.element(el, ctx_b, identifiers, BULK)
        assert a == b
        count += len(a.messages)
    assert count > 1000


@pytest.mark.parametrize(
    "element",
    [
        {"type": "customer", "customer_id": "bad\ud800"},
        {"type": "customer", "customer_id": "c", "user_identifiers": {"email": "x\udfff"}},
        {"type": "device", "customer_id": "c", "device_id": "d\ud800", "attributes": {"platform": "web"}},
        {"type": "event", "customer_id": "c\ud800", "actions": [{"action": "a"}]},
        {
            "type": "event",
            "customer_id": "c",
            "actions": [{"action": "a\ud800", "current_time": 1_700_000_000}],
        },
        {"type": "event", "customer_id": "c", "actions": [{"action": "a", "app_version": "\ud800"}]},
    ],
)
def test_encoding_errors_are_fastavros(element: dict[str, Any]) -> None:
    errors = []
    for encoders in (plain_encoders(), spliced_encoders()):
        with pytest.raises(ApiError) as exc:
            ElementValidator(GatewaySettings(), encoders).element(
                element, RequestContext("W", "rid00001", NOW, None), (), BULK
            )
        errors.append(exc.value.error_body("rid00001"))
    assert errors[0] == errors[1]
    assert errors[0]["type"] == "TypeError" and "cannot encode" in errors[0]["message"]


def test_varints_are_fastavros_across_the_long_range() -> None:
    values = [0, -1, 1, 63, -64, 64, 8191, 8192, -8193, 19800, -54000, 2**27, 2**28, 2**40, 2**41]
    values += [1_700_000_000_000, 253_402_300_799_999, 2**62, 2**63 - 1, -(2**63)]
    rng = random.Random(7)
    values += [rng.randrange(-(2**63), 2**63) for _ in range(2000)]
    values += [rng.randrange(-(2**45), 2**45) for _ in range(2000)]
    for n in values:
        buffer = io.BytesIO()
        schemaless_writer(buffer, "long", n)
        assert long_bytes(n) == buffer.getvalue(), n
    for n in (2**63, -(2**63) - 1, 2**80):
        with pytest.raises(OverflowError):
            long_bytes(n)
    for size in (0, 1, 8191, 8192, 20000):
        buffer = io.BytesIO()
        schemaless_writer(buffer, "string", "é" * size)
        assert string_bytes("é" * size) == buffer.getvalue()


def test_a_bound_encoder_that_remembers_its_values_still_writes_fastavros_bytes() -> None:
    """One request's encoder keeps the encodings of its integers (times, offsets) and of its repeated
    string fields, past its bound too; a value that only hashes like a remembered one (1.0, the integer
    5 for "5") is not taken for it."""
    repeated = ("customer_id", "device_id", "action", "platform", "app_version")
    spliced = SplicedRecord(
        SERDE, "EventRecord", "t.events", BOUND_FIELDS, EVENT_FIELDS, sample_event(), repeated
    )
    plain = spliced.plain_bound(**{n: sample_event()[n] for n in BOUND_FIELDS})
    encode = spliced.bind(**{n: sample_event()[n] for n in BOUND_FIELDS})
    rng = random.Random(11)
    times = [1_700_000_000_000, 1_700_000_000_000, 0, 1, 2**62] + [
        rng.randrange(2**41) for _ in range(2 * MEMO_SIZE)
    ]
    pool = ["", "5", "u1", "é😀", "x" * 9000, None]
    for t in times + times[:50]:
        fields = {n: sample_event()[n] for n in EVENT_FIELDS} | {
            "user_time": t,
            "current_time": rng.choice([t, None]),
            "user_timezone_offset": rng.choice([None, 19800, -54000, 0, 1]),
            "customer_id": rng.choice([*pool, f"u{rng.randrange(10**6)}"]),
            "device_id": rng.choice(pool),
            "action": rng.choice(["a", "é", "", "x" * 9000, text(rng)]),
            "app_version": rng.choice(pool),
            "platform": rng.choice(pool),
        }
        assert encode(**fields) == plain(**fields)
    fields = {n: sample_event()[n] for n in EVENT_FIELDS}
    assert encode(**fields | {"user_timezone_offset": 1}) == plain(**fields | {"user_timezone_offset": 1})
    with pytest.raises(TypeError):  # as before: a float is no Avro int for the compiled code
        encode(**fields | {"user_timezone_offset": 1.0})
    assert encode(**fields | {"customer_id": "5"}) == plain(**fields | {"customer_id": "5"})
    with pytest.raises(AttributeError):  # as before: the compiled code takes strings only
        encode(**fields | {"customer_id": 5})
    with pytest.raises(UnicodeEncodeError):  # never remembered: raises each time
        encode(**fields | {"action": "\ud800"})
    with pytest.raises(UnicodeEncodeError):
        encode(**fields | {"action": "\ud800"})


def sample_event() -> dict[str, Any]:
    return {
        "workspace_id": "W",
        "request_id": "abcdefgh",
        "received_at": 1_700_000_000_000,
        "source": "api",
        "client_ip": None,
        "event_uuid": "u",
        "customer_id": "c",
        "user_identifiers": {},
        "device_id": None,
        "action": "a",
        "attributes_json": "{}",
        "platform": "ANDROID",
        "moe_os_type": None,
        "app_version": "1",
        "user_time": 1_700_000_000_000,
        "current_time": 1_700_000_000_000,
        "user_timezone_offset": 19800,
    }


COMMON_ACTIONS = [
    {"action": "ProductViewed", "current_time": 1_700_000_000, "platform": "ANDROID", "app_version": "4"},
    {"action": "Bought", "current_time": 1_700_000_000_000, "user_timezone_offset": 19800},
    *(
        {"action": "Bought", "current_time": 1_700_000_000, "platform": p}
        for p in ("ios", "IOS", "iOS", "Web")
    ),
    {"action": "Opened", "current_time": 1_700_000_000, "attributes": None},
    {"action": "Opened", "current_time": 1_700_000_000, "attributes": {}},
    {"action": "Opened", "current_time": 1_700_000_000, "attributes": {"x": "moe_y", "model": "m1"}},
    {"action": "Opened", "current_time": 1_700_000_000, "attributes": {"Mode": 1, "moe_push_opted": 1}},
    {"action": "moe_bad", "current_time": 1_700_000_000},
    {"action": "mine", "current_time": 1_700_000_000, "platform": "tv", "moe_os_type": "ROKU"},
    {"action": "Opened", "user_time": 1_700_000_000, "user_timezone_offset": -3600},
    {"action": "Opened", "current_time": 1_700_000_000, "app_version": 7, "user_timezone_offset": 60.0},
    {"action": "Opened", "current_time": 9_999_999_999_999, "attributes": {"moe_x": "\ud800"}},
    {"action": " ", "current_time": 1_700_000_000},
    {"action": "Opened", "current_time": 1_700_000_000, "attributes": {"a": "\ud800"}},
    {"action": "Opened", "current_time": 1_700_000_000, "platform": "Android "},
]


@pytest.mark.parametrize("action", COMMON_ACTIONS)
def test_the_inline_common_action_is_the_full_check_byte_for_byte(action: dict[str, Any]) -> None:
    """Bulk events take their common actions inline; the record, or the error, is the full path's."""
    validator = ElementValidator(GatewaySettings(), spliced_encoders())
    ctx_a = RequestContext("W", "rid00001", NOW, None, "idem-1")
    ctx_b = RequestContext("W", "rid00001", NOW, None, "idem-1")
    element = {"type": "event", "customer_id": "c", "actions": [action, action]}
    try:
        inline: Any = validator.element(element, ctx_a, (), BULK).values
    except ApiError as exc:
        inline = exc.error_body("r")
    try:
        encode = validator.bind(ctx_b).event
        full: Any = [validator._action(a, BULK, ctx_b, encode, "c", {}, None) for a in element["actions"]]
    except ApiError as exc:
        full = exc.error_body("r")
    assert inline == full
