"""The worker's fast paths give the same results as the plain ones: compiled Avro encoders write
fastavro's bytes and fail with its errors, orjson-based JSON falls back to json for what orjson refuses."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from inflow.processors import jsoncodec
from inflow.processors.outputs import REJECTED
from inflow.processors.state import JsonTable
from inflow.schemas.avro_template import record_encoder
from inflow.schemas.exceptions import SerdeError
from inflow.schemas.serde import AvroSerde
from tests.processors import records as r
from tests.processors.conftest import Lane

SERDE = AvroSerde()
TEXTS = ["", "a", "é€😀", 'quote " and \\ back', "x" * 127, "y" * 128, "z" * 9000]


def enriched(rng: random.Random) -> dict[str, Any]:
    def text() -> str:
        return rng.choice(TEXTS)

    def maybe() -> str | None:
        return None if rng.random() < 0.4 else text()

    return {
        "workspace_id": text(),
        "event_uuid": text(),
        "event_name": text(),
        "event_code": text(),
        "event_time": rng.choice([0, -1, 63, 64, -65, 1_750_000_000, 2**62]),
        "event_type": rng.choice(["USER_ACTION_EVENT", "CAMPAIGN_EVENT"]),
        "event_source": "MOENGAGE",
        "uid": text(),
        "customer_id": maybe(),
        "event_attributes_json": text(),
        "user_attributes_json": text(),
        "device_attributes_json": text(),
        "push_id": maybe(),
        "email_id": maybe(),
        "mobile_number": maybe(),
        "platform": maybe(),
        "received_at": rng.choice([0, 1, 1_750_000_000_123, 253_402_300_799_999]),
        "ingested_at": rng.randrange(2**41),
    }


@pytest.mark.parametrize("topic", [None, "t.events"])
def test_compiled_enriched_event_encoder_writes_fastavros_bytes(topic: str | None) -> None:
    rng = random.Random(5)
    encode, plain = record_encoder(SERDE, "EnrichedEvent", topic), SERDE.encoder("EnrichedEvent", topic=topic)
    assert encode is not plain  # the compiled one, not a fallback
    for _ in range(500):
        record = enriched(rng)
        assert encode(record) == plain(record)
    sparse = {k: v for k, v in enriched(rng).items() if k not in ("push_id", "email_id", "platform")}
    assert encode(sparse) == plain(sparse)  # absent optional fields: their null defaults


def test_compiled_encoder_fails_exactly_like_fastavro() -> None:
    encode = record_encoder(SERDE, "EnrichedEvent")
    good = enriched(random.Random(1))
    bad_values = [("event_time", "soon"), ("uid", 42), ("push_id", 7), ("received_at", 2**70)]
    for name, value in bad_values:
        record = good | {name: value}
        with pytest.raises(SerdeError) as compiled:
            encode(record)
        with pytest.raises(SerdeError) as plain:
            SERDE.encode("EnrichedEvent", record)
        assert str(compiled.value) == str(plain.value)
    missing = {k: v for k, v in good.items() if k != "uid"}
    with pytest.raises(SerdeError, match="uid"):
        encode(missing)


def test_schemas_with_types_the_compiler_lacks_keep_the_fastavro_encoder() -> None:
    assert record_encoder(SERDE, "IngestPack") is SERDE.encoder("IngestPack")  # an array of bytes


def test_compiled_user_profile_encoder_writes_fastavros_bytes() -> None:
    rng = random.Random(9)
    encode, plain = record_encoder(SERDE, "UserProfile"), SERDE.encoder("UserProfile")
    assert encode is not plain  # string arrays are compiled now
    for _ in range(300):
        profile = {
            "workspace_id": rng.choice(TEXTS),
            "uid": rng.choice(TEXTS),
            "customer_id": rng.choice([None, *TEXTS]),
            "anonymous_ids": [rng.choice(TEXTS) for _ in range(rng.randrange(3))],
            "identifiers": {rng.choice(TEXTS): rng.choice(TEXTS) for _ in range(rng.randrange(3))},
            "attributes_json": rng.choice(TEXTS),
            "platforms": rng.choice([[], ["ANDROID"], ("iOS", "WEB")]),
            "devices_json": "[]",
            "first_seen": rng.choice([0, 1_750_000_000_123]),
            "last_seen": 1_750_000_000_999,
            "merged_into": rng.choice([None, "x"]),
            "merged_uids": [rng.choice(TEXTS) for _ in range(rng.randrange(70))],
            "updated_at": 1_800_000_000_000,
            "revision": rng.randrange(2**40),
            "deleted": rng.random() < 0.5,
        }
        assert encode(profile) == plain(profile)
    # What the compiled code does not take goes to fastavro, which decides (a string: its characters).
    odd = profile | {"platforms": "ANDROID"}
    assert encode(odd) == plain(odd)
    with pytest.raises(SerdeError):
        encode(profile | {"merged_uids": [1, 2]})


def test_json_fast_path_falls_back_for_what_orjson_refuses() -> None:
    assert jsoncodec.loads('{"a": 1.5, "b": "é"}') == {"a": 1.5, "b": "é"}
    assert math.isnan(jsoncodec.loads('{"x": NaN}')["x"])  # json accepts NaN, orjson does not
    assert jsoncodec.loads(b"[1,2]") == [1, 2]
    with pytest.raises(ValueError):
        jsoncodec.loads("{not json")
    assert json.loads(jsoncodec.dumps({"big": 2**70})) == {"big": 2**70}  # beyond 64 bits
    assert json.loads(jsoncodec.dumps({1: "int key"})) == {"1": "int key"}
    assert jsoncodec.dumps({"é": [1, None, True]}) == '{"é":[1,null,true]}'


def test_state_round_trips_values_orjson_cannot_write() -> None:
    backing: dict[bytes, bytes] = {}
    table = JsonTable(backing)
    table.put(b"k", {"ltv": 2**80, "name": "é"})
    table.commit()
    table.clear_cache()
    assert table.get(b"k") == {"ltv": 2**80, "name": "é"}


def test_event_with_unparseable_attributes_is_rejected_not_fatal(lane: Lane) -> None:
    lane.feed("UserUpsert", r.user("W", "bad-attrs"))
    record = r.event("W", "bad-attrs") | {"attributes_json": "{broken"}
    (rejected,) = lane.feed("EventRecord", record)
    assert rejected.topic == REJECTED
    assert rejected.record["reason"].startswith("event attributes_json is not valid JSON")
    (ok,) = lane.events(lane.feed("EventRecord", r.event("W", "bad-attrs")))
    assert ok["customer_id"] == "bad-attrs"
