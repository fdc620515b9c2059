"""The events after the first of a pack are applied with its resolution (``LaneProcessor.next_event``):
the same outputs and state as the general path, record for record, whatever the pack holds."""

from __future__ import annotations

import random
from typing import Any

import pytest

from inflow.config.file import WorkspaceConfig
from inflow.processors.engine import LaneProcessor, enriched_events
from inflow.processors.fair_usage import FairUsage, Policy, Window
from inflow.processors.reading import IngestReader
from inflow.processors.state import State
from inflow.processors.workspaces import IdentityRulesDirectory
from inflow.schemas.avro_template import record_encoder
from inflow.schemas.serde import AvroSerde
from tests.processors import records as r

SERDE = AvroSerde()
ENCODE = {name: record_encoder(SERDE, name) for name in ("EnrichedEvent", "UserProfile", "RejectedRecord")}
SPACES = [
    WorkspaceConfig(id="W", identifiers=["customer_id"]),
    WorkspaceConfig(id="R", identifiers=["customer_id", "email", "moe_mobile"]),
]
# A tight policy, so that some users are blocked in the middle of a pack.
TIGHT = Policy((Window(60_000, 25, 600_000),))


def processor(disabled: set[str], encoder: bool = False) -> tuple[LaneProcessor, State]:
    state = State.in_memory()
    usage = FairUsage(state, {"W": TIGHT, "R": TIGHT})
    engine = LaneProcessor(
        state,
        IdentityRulesDirectory(SPACES),
        clock=lambda: 1_800_000_000_000,
        disabled=lambda ws: ws in disabled,
        fair_usage=usage,
        enriched_events=enriched_events(SERDE, None) if encoder else None,
    )
    return engine, state


def packs(rng: random.Random) -> list[list[tuple[str, dict[str, Any]]]]:
    """Packs as the gateway makes them (one user's records of a request), with what breaks a run: other
    devices and identifiers, duplicates, bad attributes, profile updates, campaign events, time jumps."""
    out = []
    uuids: list[str] = []
    for n in range(300):
        ws = rng.choice(["W", "R"])
        who = f"u{rng.randrange(12)}"
        at = n * rng.choice([1, 1, 1, 90])
        items: list[tuple[str, dict[str, Any]]] = []
        if rng.random() < 0.3:
            items.append(("UserUpsert", r.user(ws, who, at=at, attributes={"n": n, "email": f"{who}@x.io"})))
        for k in range(rng.randrange(1, 12)):
            kw: dict[str, Any] = {}
            if rng.random() < 0.15:
                kw["device_id"] = rng.choice(["d1", "d2"])
            if ws == "R" and rng.random() < 0.2:
                kw["user_identifiers"] = {"email": f"{who}@x.io"}
            if rng.random() < 0.1:
                kw["attributes"] = {"push_id": "tok", "campaign_id": "c"}
            if uuids and rng.random() < 0.1:
                kw["event_uuid"] = rng.choice(uuids)  # an upstream duplicate (or the same pack read again)
            code = rng.choice(["Purchase", "Viewed", "NOTIFICATION_RECEIVED_MOE", "MOE_EMAIL_OPEN"])
            record = r.event(ws, who, code, at=at + k * rng.choice([0, 1, 70]), **kw)
            if rng.random() < 0.05:
                record["attributes_json"] = "{broken"
            uuids.append(record["event_uuid"])
            items.append(("EventRecord", record))
            if rng.random() < 0.05:
                items.append(("DeviceUpsert", r.device(ws, who, "d1", at=at, push_id=f"p{n}")))
        out.append(items)
    return out


def comparable(outputs: list[Any]) -> list[tuple[str, bytes, Any]]:
    """Each output as it is published: topic, key and encoded value."""
    return [(o.topic, o.key, o.raw or o.encoded or ENCODE[o.record_name](o.record)) for o in outputs]


@pytest.mark.parametrize("encoder", [False, True], ids=["records", "run-bound encoder"])
def test_next_event_gives_what_the_general_path_gives(encoder: bool) -> None:
    for seed in range(4):
        data = packs(random.Random(seed))
        disabled: set[str] = set()
        general, general_state = processor(disabled)
        fast, fast_state = processor(disabled, encoder)
        assert (fast.enriched_events is not None) is encoder  # the compiled run encoder, not a fallback
        reused, seeded, reasons = 0, 0, set()
        for offset, items in enumerate(data):
            if offset == 200:
                disabled.add("R")  # `inflow workspaces disable` in the middle: runs stop too
            fast.run = None
            for index, (name, record) in enumerate(items):
                decoded = SERDE.decode(SERDE.encode(name, record))[1]
                position = [0, offset, index]
                expected = general.process(name, dict(decoded), position)
                general_state.stage()
                after_user = fast.run is not None and fast.run.slot is None
                got = fast.next_event(dict(decoded), position) if name == "EventRecord" else None
                if got is None:
                    got = fast.process(name, dict(decoded), position)
                else:
                    reused += 1
                    seeded += after_user
                fast_state.stage()
                assert comparable(got) == comparable(expected), (seed, offset, index, name)
                reasons |= {
                    o.record["reason"].split(":")[0][:30] for o in expected if o.topic.endswith("rejected")
                }
            general_state.flush()
            fast_state.flush()
        assert reused > 300  # the runs were taken, not only the general path
        assert seeded > 20  # and runs started by a pack's user record
        assert {"event attributes_json is not v", "workspace disabled", "Fair usage policy"} <= reasons, (
            reasons
        )
        for table, other in zip(general_state.tables, fast_state.tables, strict=True):
            assert table.backing == other.backing
        assert fast.duplicates == general.duplicates > 0


def test_raw_events_give_what_the_general_path_gives() -> None:
    """The lane's path for the usual event of a run (``PackDecoder.raw`` + ``LaneProcessor.raw_event``: the
    enriched event joined from the run's bound parts and the event's own field bytes) against the general
    path, over packs whose events share their request fields as the gateway writes them."""
    reader = IngestReader(SERDE)
    for seed in range(4):
        data = packs(random.Random(seed))
        for items in data:  # one request: every record of a pack was received at once
            first = next((record for name, record in items if name == "EventRecord"), None)
            for name, record in items:
                if name == "EventRecord" and first is not None:
                    record["received_at"] = first["received_at"]
        disabled: set[str] = set()
        general, general_state = processor(disabled)
        fast, fast_state = processor(disabled, encoder=True)
        raws, blocked = 0, 0
        for offset, items in enumerate(data):
            if offset == 200:
                disabled.add("R")
            fast.run = None
            decoder = reader.pack_decoder()
            for index, (name, record) in enumerate(items):
                encoded = SERDE.encode(name, record)
                decoded = SERDE.decode(encoded)[1]
                position = [0, offset, index]
                expected = general.process(name, dict(decoded), position)
                general_state.stage()
                got = None
                if fast.run is not None and (raw := decoder.raw(encoded)) is not None:  # as the lane does
                    value = fast.raw_event(raw[0], raw[1], position)
                    if value is not None:
                        _, read = decoder.decode(encoded)
                        if isinstance(value, bytes):
                            got, raws = [fast.raw_output(value, read)], raws + 1
                        else:
                            got, blocked = [fast.rejection("EventRecord", read, value)], blocked + 1
                if got is None:
                    read_name, read = decoder.decode(encoded)
                    if read_name == "EventRecord" and fast.run is not None and not read.get("origin"):
                        got = fast.next_event(read, position)
                    if got is None:
                        got = fast.process(read_name, read, position)
                fast_state.stage()
                assert comparable(got) == comparable(expected), (seed, offset, index, name)
            general_state.flush()
            fast_state.flush()
        assert raws > 150 and blocked > 0, (raws, blocked)  # the raw path was taken, and blocks too
        for table, other in zip(general_state.tables, fast_state.tables, strict=True):
            assert table.backing == other.backing
        assert fast.duplicates == general.duplicates
