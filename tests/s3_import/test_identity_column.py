"""An identifier column instead of User ID (identity resolution on, §4.5): the definition rules against the
workspace's identifiers, and the records such a row makes. End to end: ``test_identity_column_e2e.py``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from inflow.producers.s3_import.definition import ImportDefinition, identity_identifier, parse_definition
from inflow.producers.s3_import.exceptions import DefinitionError, RowError
from inflow.producers.s3_import.records import RecordBuilder

BASE: dict[str, Any] = {
    "name": "by-email",
    "workspace_id": "WS",
    "type": "registered_users",
    "bucket": "b",
    "folder": "in/users",
    "access_key": "AK",
    "secret_key": "SK",
    "date_format": "yyyymmdd",
    "mappings": [
        {"column": "Email", "moe_attr": "u_em", "role": "identifier"},
        {"column": "Name", "moe_attr": "u_n"},
    ],
}
EVENT_TIME = {"column": "t", "moe_attr": "event_time", "type": "datetime", "datetime_format": "YYYY-MM-DD"}


def make(**over: Any) -> ImportDefinition:
    return parse_definition(BASE | over)


def test_an_identifier_column_can_stand_for_user_id_in_users_and_events_imports() -> None:
    users = make()
    assert users.identity is not None and users.identity.column == "Email"
    events = make(
        type="events",
        event_name="Purchase",
        mappings=[{"column": "Email", "moe_attr": "email", "role": "identifier"}, EVENT_TIME],
    )
    assert events.identity is not None and events.identity.moe_attr == "email"
    # The alias of a standard attribute counts: the u_em column carries the workspace's email identifier.
    assert identity_identifier(users, ("customer_id", "email")) == "email"
    assert identity_identifier(events, ("customer_id", "moe_mobile", "email")) == "email"


def test_user_id_mapped_keeps_user_id_as_the_identity() -> None:
    d = make(mappings=[{"column": "ID", "moe_attr": "uid"}, *BASE["mappings"]])
    assert d.identity is None
    assert identity_identifier(d, ("customer_id",)) is None  # no workspace rule applies


@pytest.mark.parametrize(
    ("identifiers", "reason"),
    [
        (("customer_id",), "workspace WS has identity resolution off"),
        (
            ("customer_id", "moe_mobile"),
            "u_em is not an identifier of workspace WS .its identifiers: customer_id, moe_mobile",
        ),
        (None, "workspace WS is not known"),
    ],
)
def test_an_identity_column_the_workspace_cannot_resolve_is_refused(
    identifiers: tuple[str, ...] | None, reason: str
) -> None:
    with pytest.raises(
        DefinitionError, match=f"column 'Email' .u_em. cannot identify users instead of User ID: {reason}"
    ):
        identity_identifier(make(), identifiers)


def test_without_user_id_or_an_identifier_column_the_mandatory_mapping_is_missing() -> None:
    with pytest.raises(
        DefinitionError, match="mandatory mapping missing: User ID .or, in a workspace with identity"
    ):
        make(mappings=[{"column": "Name", "moe_attr": "u_n"}])
    skipped = [{"column": "Email", "moe_attr": "u_em", "role": "identifier", "is_skipped": True}]
    with pytest.raises(DefinitionError, match="mandatory mapping missing"):
        make(mappings=skipped)
    # Anonymous users and aux data keep their own mandatory columns.
    with pytest.raises(DefinitionError, match="mandatory mapping missing: Anonymous ID"):
        make(type="anonymous_users")
    with pytest.raises(DefinitionError, match="mandatory mapping missing: User ID$"):
        make(type="aux_data", file_prefix="aux")


def builder(d: ImportDefinition) -> RecordBuilder:
    b = RecordBuilder(
        d, "b/in", "registered_user_data_20240101.csv", "run-1", datetime(2024, 1, 1, tzinfo=UTC)
    )
    b.identity = ("u_em", "email")
    return b


def test_a_row_is_keyed_by_its_identifier_route_and_carries_no_customer_id() -> None:
    key, record = builder(make()).build(2, {"u_em": "a@x.io", "u_n": "A"}, {}, {"u_em": "a@x.io"})
    assert key == b"WS:email=a@x.io"  # the processors' route of the email identifier (no forward needed)
    assert record["customer_id"] is None
    assert record["user_identifiers"] == {"u_em": "a@x.io"}


@pytest.mark.parametrize("ids", [{}, {"u_em": "  "}])
def test_a_row_without_its_identity_value_fails_alone_with_the_reason(ids: dict[str, str]) -> None:
    with pytest.raises(
        RowError, match=r"Column value for the selected identifier attribute \(u_em\) is absent"
    ):
        builder(make()).build(3, {"u_n": "B"}, {}, ids)
