"""Element rules that need no broker: array operators, platforms, TV, offsets, future events, unset rules."""

from __future__ import annotations

import json
import multiprocessing
import string
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from inflow.producers.bulk_api.context import RequestContext, client_ip, new_request_id
from inflow.producers.bulk_api.elements import ElementValidator, Encoders
from inflow.producers.bulk_api.exceptions import ApiError
from inflow.producers.bulk_api.messages import BULK
from inflow.producers.bulk_api.settings import GatewaySettings
from inflow.schemas.serde import AvroSerde

NOW = datetime.now(UTC)


@pytest.fixture(scope="module", params=["fastavro", "templates"])
def validator(request: pytest.FixtureRequest) -> ElementValidator:
    """Every rule is checked with fastavro's encoders and with the gateway's per-request templates."""
    serde = AvroSerde()
    if request.param == "templates":
        return ElementValidator(GatewaySettings(), Encoders.spliced(serde, lambda short: short))
    encoders = Encoders(
        serde.encoder("UserUpsert"), serde.encoder("DeviceUpsert"), serde.encoder("EventRecord")
    )
    return ElementValidator(GatewaySettings(), encoders)


def run(validator, element, identifiers=()):
    return validator.element(element, RequestContext("W", "rid00001", NOW, None), identifiers, BULK)


def error(validator, element, identifiers=()) -> ApiError:
    with pytest.raises(ApiError) as exc:
        run(validator, element, identifiers)
    return exc.value


def customer(**attributes):
    return {"type": "customer", "customer_id": "c1", "attributes": attributes}


def event(**action):
    return {"type": "event", "customer_id": "c1", "actions": [{"action": "Bought"} | action]}


def test_array_operator_rules(validator):
    both = customer(
        addValueToArrayField={"first_name": ["a"]}, removeValueFromArrayField={"first_name": ["b"]}
    )
    err = error(validator, both)
    assert (err.attribute, err.message, err.type) == (
        "addValueToArrayField",
        "Cannot add and remove 'first_name' at the same time",
        "ArrayFieldError",
    )
    assert (
        error(validator, customer(tags=["x"], addValueToArrayField={"tags": ["y"]})).type == "ArrayFieldError"
    )
    assert error(validator, customer(addValueToArrayField={"platforms": ["y"]})).type == "ArrayFieldError"
    ok = run(
        validator, customer(addValueToArrayField={"tags": ["y"]}, removeValueFromArrayField={"old": "z"})
    )
    assert ok.users == 1


def test_platforms_are_normalised_and_checked(validator):
    result = run(
        validator,
        {"type": "customer", "customer_id": "c1", "platforms": [{"platform": "ios", "active": True}]},
    )
    assert result.messages[0].topic == "ingest.records"
    assert error(validator, customer(platforms=[{"platform": "Symbian"}])).attribute == "platform"
    assert (
        error(validator, customer(platforms=[{"platform": "web", "active": "maybe"}])).attribute == "active"
    )
    assert error(validator, customer(platforms="web")).message == "platforms is expected to be list"


@pytest.mark.parametrize("name", ["id", "_id", ""])
def test_blocked_user_attribute_names(validator, name):
    assert "not allowed" in error(validator, customer(**{name: 1})).message


def test_system_moe_attributes_are_allowed(validator):
    assert run(validator, customer(moe_unsubscribe=True, moe_gaid="g")).users == 1


def test_update_existing_only_and_unset_attributes(validator):
    assert (
        error(validator, {"type": "customer", "customer_id": "c1", "update_existing_only": "yes"}).type
        == "TypeError"
    )
    good = {"type": "customer", "customer_id": "c1", "unset_attributes": [{"type": "prefix", "attr": "tmp_"}]}
    assert run(validator, good).users == 1
    bad = {"type": "customer", "customer_id": "c1", "unset_attributes": [{"type": "regex", "attr": "x"}]}
    assert error(validator, bad).attribute == "unset_attributes"


def test_customer_id_numbers_become_strings_and_other_types_are_rejected(validator):
    assert run(validator, {"type": "customer", "customer_id": 12345}).users == 1
    assert (
        error(validator, {"type": "customer", "customer_id": {"a": 1}}).message
        == "customer_id is expected to be string"
    )
    assert error(validator, {"type": "customer", "customer_id": 1}).type == "BlockedValueError"
    assert error(validator, {"type": "customer", "customer_id": " N/A "}).type == "BlockedValueError"


def test_event_platform_tv_and_os_type(validator):
    assert run(validator, event(platform="TV", moe_os_type="tvOS")).events == 1
    assert error(validator, event(platform="web", moe_os_type="tvOS")).attribute == "moe_os_type"
    assert error(validator, event(platform="TV", moe_os_type="Amiga")).attribute == "moe_os_type"
    assert error(validator, event(platform="Blackberry")).attribute == "platform"


@pytest.mark.parametrize("offset", [54001, -54001, 1.5, "19800", True])
def test_timezone_offset_must_be_whole_seconds_in_range(validator, offset):
    assert error(validator, event(user_timezone_offset=offset)).attribute == "user_timezone_offset"


def test_future_events_are_rejected_and_bad_times_named(validator):
    future = (NOW + timedelta(days=1)).timestamp()
    err = error(validator, event(current_time=future))
    assert (err.attribute, err.message) == ("current_time", "Future dated events are not accepted")
    assert error(validator, event(user_time="2019-15-12")).attribute == "user_time"


def test_each_action_is_one_event_record(validator):
    element = {
        "type": "event",
        "customer_id": "c1",
        "actions": [{"action": "a"}, {"action": "b"}, {"action": "c"}],
    }
    assert run(validator, element).events == 3


def test_lone_surrogates_are_a_clear_element_error(validator):
    assert error(validator, customer(note="\ud800")).attribute == "attributes"
    assert error(validator, {"type": "customer", "customer_id": "bad\ud800"}).type == "TypeError"


def test_device_requires_platform_and_attributes(validator):
    base = {"type": "device", "customer_id": "c1", "device_id": "d1"}
    assert error(validator, base).attribute == "attributes"
    assert error(validator, base | {"attributes": {}}).attribute == "platform"
    assert error(validator, base | {"attributes": {"platform": "Nokia"}}).attribute == "platform"
    result = run(validator, base | {"attributes": {"platform": "android", "push_id": "p"}})
    assert (
        json.loads(AvroSerde().decode(result.messages[0].value)[1]["attributes_json"])["platform"]
        == "ANDROID"
    )


def test_client_ip_is_the_left_most_valid_forwarded_address():
    assert client_ip("203.0.113.195, 70.41.3.18", "127.0.0.1") == "203.0.113.195"
    assert client_ip(" 2001:db8::1 ", None) == "2001:db8::1"
    assert client_ip("unknown, 1.2.3.4", "127.0.0.1") == "127.0.0.1"
    assert client_ip(None, "10.0.0.1") == "10.0.0.1"


def test_request_ids_are_eight_random_letters_and_digits():
    ids = [new_request_id() for _ in range(5000)]
    assert all(len(i) == 8 and i.isascii() and i.isalnum() for i in ids)
    assert len(set(ids)) == len(ids)
    assert {i[0] for i in ids} | {i[-1] for i in ids} == set(string.ascii_letters + string.digits)


def _child_uuids(conn) -> None:
    ctx = RequestContext("W", "rid00001", NOW, None)
    conn.send([ctx.next_event_uuid() for _ in range(3)])
    conn.close()


def test_event_uuids_are_random_version_4_and_a_forked_child_draws_its_own():
    ctx = RequestContext("W", "rid00001", NOW, None)
    ids = [ctx.next_event_uuid() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    assert all(str(uuid.UUID(i)) == i and uuid.UUID(i).version == 4 for i in ids)
    assert {i[19] for i in ids} == set("89ab")  # the RFC 4122 variant, each of its four digits
    # The parent holds drawn uuids now; a child forked here must not hand out the same ones.
    parent_end, child_end = multiprocessing.get_context("fork").Pipe()
    child = multiprocessing.get_context("fork").Process(target=_child_uuids, args=(child_end,))
    child.start()
    from_child = parent_end.recv()
    child.join(30)
    assert child.exitcode == 0
    assert not set(from_child) & {ctx.next_event_uuid() for _ in range(100)}
