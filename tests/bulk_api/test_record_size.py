"""An element whose record is over its topic's size limit is refused with a 413 before anything is sent."""

from __future__ import annotations

from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

from inflow.schemas.packs import unpack
from inflow.schemas.serde import AvroSerde
from tests.bulk_api.conftest import WS
from tests.support import consume_n, consume_until_quiet, wait_for

TOPIC_LIMIT = 4000  # max.message.bytes of this test's ingest.records: far below the 128 KB body cap


def event(customer_id: str, blob_size: int = 10) -> dict:
    return {
        "type": "event",
        "customer_id": customer_id,
        "actions": [{"action": "viewed", "attributes": {"blob": "x" * blob_size}}],
    }


def test_an_element_over_the_topic_limit_is_413_and_never_stored(
    catalogue_topics, admin, gateway_factory, consumer_factory
):
    topic = catalogue_topics.topic("ingest.records")
    limit = ConfigEntry("max.message.bytes", str(TOPIC_LIMIT), incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource("topic", topic, incremental_configs=[limit])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)

    def broker_limit() -> str:
        described = admin.describe_configs([ConfigResource("topic", topic)])
        return next(iter(described.values())).result(30)["max.message.bytes"].value

    # The controller accepts the change before every broker applies it; the gateway reads it at start.
    wait_for(lambda: broker_limit() == str(TOPIC_LIMIT), 30, what="the topic's new size limit")
    gw = gateway_factory()

    # Track Event: the one record is too large, so the request is.
    resp = gw.post(f"/v1/event/{WS}", event("big-single", 6000))
    assert resp.status_code == 413
    body = resp.json()
    assert body["status"] == "fail"
    error = body["error"]
    assert error["type"] == "Payload too large"
    assert "too large to store" in error["message"]
    assert f"over the {TOPIC_LIMIT - 128}-byte limit of topic {topic}" in error["message"]
    assert error["request_id"]

    # Bulk Import: the oversized element is listed as failed, the good one is accepted and stored.
    bulk = {"type": "transition", "elements": [event("small"), event("big-bulk", 6000)]}
    resp = gw.post(f"/v1/transition/{WS}", bulk)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["accepted_elements"] == 1
    [failed] = answer["failed_elements"]
    assert failed["index"] == 1 and failed["error"]["type"] == "Payload too large"

    # A Bulk request with no element that fits fails with that element's error.
    resp = gw.post(f"/v1/transition/{WS}", {"type": "transition", "elements": [event("big-only", 6000)]})
    assert resp.status_code == 413
    assert resp.json()["error"]["type"] == "Payload too large"

    # Only the good element reached the topic; the request's ok answer came after its acknowledgement.
    serde = AvroSerde()
    consumer = consumer_factory([topic])
    stored = consume_n(consumer, 1, timeout=60) + consume_until_quiet(consumer, 3.0, 60)
    assert [serde.decode(m.value())[1]["customer_id"] for m in stored] == ["small"]


def test_a_users_records_over_the_topic_limit_together_go_as_several_packs_in_order(
    catalogue_topics, admin, gateway_factory, consumer_factory
):
    """Twelve actions of ~1 KB for one user: each fits the 4,000-byte limit, all twelve together do not, so
    the gateway splits the user's pack; every message fits and the actions keep the request's order."""
    topic = catalogue_topics.topic("ingest.records")
    limit = ConfigEntry("max.message.bytes", str(TOPIC_LIMIT), incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource("topic", topic, incremental_configs=[limit])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)

    def broker_limit() -> str:
        described = admin.describe_configs([ConfigResource("topic", topic)])
        return next(iter(described.values())).result(30)["max.message.bytes"].value

    wait_for(lambda: broker_limit() == str(TOPIC_LIMIT), 30, what="the topic's new size limit")
    gw = gateway_factory()
    actions = [{"action": f"step{n}", "attributes": {"blob": "x" * 1000}} for n in range(12)]
    element = {"type": "event", "customer_id": "packed", "actions": actions}
    resp = gw.post(f"/v1/transition/{WS}", {"type": "transition", "elements": [element]})
    assert resp.status_code == 200, resp.text

    serde = AvroSerde()
    consumer = consumer_factory([topic])
    stored = consume_n(consumer, 1, timeout=60) + consume_until_quiet(consumer, 3.0, 60)
    assert 1 < len(stored) < 12  # packs, split
    assert all(len(m.key()) + len(m.value()) <= TOPIC_LIMIT - 128 for m in stored)
    names = [serde.decode(item)[1]["action"] for m in stored for item in unpack(serde, m.value())]
    assert names == [f"step{n}" for n in range(12)]
