"""Get User from the profile store: a view of the compacted profiles topic, 503 until it is caught up."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from confluent_kafka.admin import NewTopic

from inflow.config.settings import KafkaSettings
from tests.bulk_api.conftest import IR_KEY, IR_WS, WS, seed_workspaces
from tests.support import wait_for

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def profile(uid: str, customer_id: str | None, revision: int = 1, workspace: str = WS, **extra):
    rec = {
        "workspace_id": workspace,
        "uid": uid,
        "customer_id": customer_id,
        "anonymous_ids": [],
        "identifiers": {},
        "attributes_json": json.dumps({"u_fn": "Ann", "plan": "gold"}),
        "platforms": ["ANDROID"],
        "devices_json": "[]",
        "first_seen": NOW,
        "last_seen": NOW,
        "merged_into": None,
        "merged_uids": [],
        "updated_at": NOW,
        "revision": revision,
        "deleted": False,
    }
    return rec | extra


def publish(producer_factory, serde, kafka: KafkaSettings, records):
    producer = producer_factory()
    for rec in records:
        producer.produce(
            kafka.topic("profiles"),
            serde.encode("UserProfile", rec),
            f"{rec['workspace_id']}:{rec['uid']}".encode(),
        )
    assert producer.flush(30) == 0


def export(gw, identifiers, fields=None, app_id=WS, auth=(WS, "ws1-data-api-key")):
    data = {"identifiers": identifiers} | ({"user_fields_to_export": fields} if fields else {})
    return gw.post(f"/v1/customers/export?app_id={app_id}", {"data": data}, auth=auth)


def test_get_user_answers_from_the_profile_topic(gateway_factory, catalogue_topics, producer_factory, serde):
    publish(
        producer_factory,
        serde,
        catalogue_topics,
        [
            profile("uid-1", "ann", revision=1, attributes_json=json.dumps({"u_fn": "Old"})),
            profile("uid-1", "ann", revision=2),
            profile("uid-2", None, workspace=IR_WS, identifiers={"moe_mobile": "+9100"}),
            profile("uid-3", "bob", revision=5),
            profile("uid-3", "bob", revision=6, merged_into="uid-1"),
            profile("uid-4", "gone", deleted=True),
        ],
    )
    gw = gateway_factory()  # reads the topic to its end before it answers
    resp = export(
        gw,
        [
            {"identifier_type": "customer_id", "identifier": "ann"},
            {"identifier_type": "customer_id", "identifier": "nobody"},
            {"identifier_type": "customer_id", "identifier": "gone"},
        ],
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "success" and body["type"] == "export_users"
    assert body["data"]["users_not_found"] == ["nobody", "gone"]
    [user] = body["data"]["users"]
    attrs = user["user_attributes"]
    assert attrs["moengage_id"] == "uid-1" and attrs["uid"] == "ann" and attrs["u_fn"] == "Ann"
    assert attrs["plan"] == "gold" and attrs["platforms"] == ["ANDROID"] and attrs["cr_t"] == NOW.isoformat()

    by_id = export(gw, [{"identifier_type": "moengage_id", "identifier": "uid-3"}], fields=["plan"]).json()
    assert by_id["data"]["users"] == [
        {"user_attributes": {"moengage_id": "uid-1", "uid": "ann", "plan": "gold"}}
    ]

    ir = export(
        gw, [{"identifier_type": "moe_mobile", "identifier": "+9100"}], app_id=IR_WS, auth=(IR_WS, IR_KEY)
    )
    assert ir.json()["data"]["users"][0]["user_attributes"]["moe_mobile"] == "+9100"

    # A snapshot published while the gateway runs is visible within the follow latency.
    publish(producer_factory, serde, catalogue_topics, [profile("uid-9", "late")])
    wait_for(
        lambda: export(gw, [{"identifier_type": "customer_id", "identifier": "late"}]).json()["data"][
            "users"
        ],
        30,
        what="late profile",
    )


def test_get_user_limits_and_validation(gateway_factory):
    gw = gateway_factory()
    too_many = [{"identifier_type": "customer_id", "identifier": f"c{i}"} for i in range(21)]
    err = export(gw, too_many).json()["error"]
    assert (err["type"], err["message"]) == ("LimitBreached", "max limit allowed is 20")
    assert gw.post(f"/v1/customers/export?app_id={WS}", {"nodata": 1}).status_code == 400
    assert gw.post("/v1/customers/export", {"data": {}}).json()["error"]["type"] == "ParamsRequired"
    resp = export(gw, [{"identifier_type": "customer_id", "identifier": "x"}])
    assert resp.status_code == 200 and resp.headers["x-ratelimit-limit"] == "1000"


def test_get_user_is_503_with_a_clear_body_until_the_profile_topic_exists(
    gateway_factory, kafka_bootstrap, admin, unique
):
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=f"np{unique}")
    topic = kafka.topic("control.workspaces")
    admin.create_topics([NewTopic(topic, 1, 1, config={"cleanup.policy": "compact"})])[topic].result()
    gw = gateway_factory(kafka=kafka, seeds=seed_workspaces(), wait_views=False)
    wait_for(lambda: gw.gateway.directory.ready, 60, what="credentials")
    resp = export(gw, [{"identifier_type": "customer_id", "identifier": "ann"}])
    assert resp.status_code == 503
    err = resp.json()["error"]
    assert err["type"] == "ServiceUnavailable"
    assert f"topic {kafka.topic('profiles')} does not exist" in err["message"]


def test_get_user_says_not_found_after_a_tombstone(
    gateway_factory, catalogue_topics, producer_factory, serde
):
    """Delete User tombstones the profile (and those merged into it) on the compacted topic: Get User by
    any identifier no longer finds it, whether the tombstone was read at start or while running."""
    publish(
        producer_factory,
        serde,
        catalogue_topics,
        [profile("uid-t1", "tom", identifiers={"email": "t@x.io"}), profile("uid-t2", "tim")],
    )
    producer = producer_factory()
    producer.produce(catalogue_topics.topic("profiles"), None, f"{WS}:uid-t1".encode())
    assert producer.flush(30) == 0
    gw = gateway_factory()
    asked = [
        {"identifier_type": "customer_id", "identifier": "tom"},
        {"identifier_type": "moengage_id", "identifier": "uid-t1"},
        {"identifier_type": "customer_id", "identifier": "tim"},
    ]
    data = export(gw, asked).json()["data"]
    assert data["users_not_found"] == ["tom", "uid-t1"]
    assert [u["user_attributes"]["moengage_id"] for u in data["users"]] == ["uid-t2"]
    producer.produce(catalogue_topics.topic("profiles"), None, f"{WS}:uid-t2".encode())
    assert producer.flush(30) == 0
    wait_for(lambda: export(gw, asked[2:]).json()["data"]["users_not_found"] == ["tim"], 30, what="tombstone")
    # An older snapshot of the erased uid, delivered late, does not bring it back.
    for rec in (profile("uid-t2", "tim", revision=7), profile("uid-t9", "marker")):  # one partition: in order
        key = f"{WS}:{rec['uid']}".encode()
        producer.produce(
            catalogue_topics.topic("profiles"), serde.encode("UserProfile", rec), key, partition=0
        )
    assert producer.flush(30) == 0
    wait_for(
        lambda: export(gw, [{"identifier_type": "customer_id", "identifier": "marker"}]).json()["data"][
            "users"
        ],
        30,
        what="marker profile",
    )
    assert export(gw, asked[2:]).json()["data"]["users_not_found"] == ["tim"]
