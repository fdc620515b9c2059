"""Row records: deterministic ids, keys, and the per-file Avro encoder byte-identical to fastavro."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from inflow.producers.s3_import.avro_template import template_encoder
from inflow.producers.s3_import.definition import parse_definition
from inflow.producers.s3_import.exceptions import RowError
from inflow.producers.s3_import.mapping import Role
from inflow.producers.s3_import.records import NAMESPACE, RecordBuilder, row_uuid, uuid_prefix
from inflow.schemas.serde import AvroSerde

BASE: dict[str, Any] = {
    "name": "imp",
    "workspace_id": "WS",
    "bucket": "b",
    "folder": "f",
    "access_key": "a",
    "secret_key": "s",
    "date_format": "yyyymmdd",
}
EVENTS = BASE | {
    "type": "events",
    "event_name": "Buy",
    "mappings": [
        {"column": "u", "moe_attr": "uid"},
        {"column": "t", "moe_attr": "event_time", "type": "datetime", "datetime_format": "YYYY-MM-DD"},
    ],
}


def test_row_uuid_is_uuid5_and_deterministic() -> None:
    prefix = uuid_prefix("imp", "b/f", "x.csv")
    for row in (1, 2, 99, 1_000_000):
        assert row_uuid(prefix, row) == str(uuid.uuid5(NAMESPACE, f"imp/b/f/x.csv/{row}"))
    assert row_uuid(prefix, 1) != row_uuid(uuid_prefix("imp", "b/f", "y.csv"), 1)


@pytest.mark.parametrize("kind", ["events", "registered_users", "anonymous_users"])
def test_template_encoder_matches_fastavro_byte_for_byte(kind: str) -> None:
    serde = AvroSerde()
    if kind == "events":
        d = parse_definition(EVENTS)
    elif kind == "registered_users":
        d = parse_definition(
            BASE
            | {
                "type": kind,
                "do_not_create_new_users": True,
                "mappings": [{"column": "u", "moe_attr": "uid"}],
            }
        )
    else:
        d = parse_definition(
            BASE | {"type": kind, "mappings": [{"column": "e", "moe_attr": "u_em", "role": "anonymous_id"}]}
        )
    name = "EventRecord" if kind == "events" else "UserUpsert"
    builder = RecordBuilder(d, "b/f", "x.csv", "run-1", datetime(2024, 1, 1, tzinfo=UTC))
    rows = []
    for i in range(1, 400):
        roles = {
            Role.USER_ID: f"user-{i}",
            Role.ANONYMOUS_ID: f"anon-é-{i}",
            Role.EVENT_TIME_UTC: datetime(2024, 1, 1, tzinfo=UTC) + timedelta(milliseconds=i * 7919),
        }
        attrs = {"n": i * 1.5, "s": "ü" * (i % 300), "list": ["a", "b"], "big": "x" * (i * 20)}
        ids = {"email": f"u{i}@x.io"} if i % 3 else {}
        rows.append(builder.build(i, attrs, roles, ids)[1])
    plain = serde.encoder(name, topic="t")
    fast = template_encoder(serde, name, "t", builder.constants, rows[0])
    assert fast is not plain
    for record in rows:
        assert fast(record) == plain(record)
        assert serde.decode(fast(record), expected=name)[1]["event_uuid"] == record["event_uuid"]


def test_keys_and_missing_identities() -> None:
    d = parse_definition(EVENTS)
    builder = RecordBuilder(d, "b/f", "x.csv", "run-1", datetime(2024, 1, 1, tzinfo=UTC))
    key, record = builder.build(
        3, {}, {Role.USER_ID: "u1", Role.EVENT_TIME_UTC: datetime(2024, 1, 1, tzinfo=UTC)}, {}
    )
    assert key == b"WS:u1" and record["action"] == "Buy" and record["origin"] == "imp/x.csv/3"
    with pytest.raises(RowError, match="event datetime missing"):
        builder.build(4, {}, {Role.USER_ID: "u1"}, {})
    with pytest.raises(RowError, match=r"identifier attribute \(ID\) is absent"):
        builder.build(5, {}, {Role.EVENT_TIME_UTC: datetime(2024, 1, 1, tzinfo=UTC)}, {})
