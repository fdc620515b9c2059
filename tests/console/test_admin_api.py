"""The admin API against a real broker and S3 server: roles, every operation, the audit log, bad input."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from inflow.config.settings import KafkaSettings
from inflow.console.openapi import document
from inflow.console.server import build_app
from inflow.console.settings import ConsoleSettings
from inflow.kafka.producer import KafkaProducer
from inflow.local.s3 import boto3_client
from inflow.producers.s3_import.exceptions import FetchError
from inflow.producers.s3_import.storage import REPORT_FOLDER, Folder
from inflow.schemas.serde import AvroSerde
from inflow.workspaces.keys import verify_key
from tests.console.conftest import RunningConsole
from tests.s3_import.conftest import USER_MAPPINGS
from tests.streams.endpoint import RecordingEndpoint
from tests.support import wait_for

METHODS = {"get", "put", "post", "delete", "patch"}
SERDE = AvroSerde()


def audit_records(con: RunningConsole, action: str) -> list[dict[str, Any]]:
    return [r for r in con.ok("GET", "/api/audit?limit=500")["records"] if r["action"] == action]


def test_every_api_route_is_documented_and_every_documented_one_served(con: RunningConsole) -> None:
    served_doc = con.call("GET", "/api/openapi.json").json()
    assert served_doc == json.loads(json.dumps(document()))
    app = build_app(con.console, ConsoleSettings())
    routes = {(r.method.lower(), r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    served = {(m, p) for m, p in routes if p.startswith("/api/") and m != "head" and p != "/api/openapi.json"}
    documented = {(m, p) for p, item in served_doc["paths"].items() for m in item if m in METHODS}
    assert served == documented
    for path, item in served_doc["paths"].items():
        for operation in item.values():
            declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path))


def test_roles_tokens_and_who_is_recorded(con: RunningConsole) -> None:
    assert con.call("GET", "/api/workspaces").status_code == 401
    bad = con.call("GET", "/api/workspaces", "not-a-token-of-ours-at-all-0123456789")
    assert bad.status_code == 401 and "unknown or revoked" in bad.json()["error"]["reason"]
    basic = con.call("GET", "/api/workspaces", headers={"Authorization": "Basic V1MxOmtleQ=="})
    assert basic.status_code == 401 and "Bearer" in basic.json()["error"]["reason"]

    made = con.admin("POST", "/api/tokens", json={"name": "viewer", "role": "read"})
    assert made.status_code == 201 and made.json()["role"] == "read"
    viewer = made.json()["token"]
    assert con.call("GET", "/api/whoami", viewer).json() == {"name": "viewer", "role": "read"}
    assert con.call("GET", "/api/workspaces", viewer).status_code == 200
    refused = con.call("POST", "/api/workspaces", viewer, json={"workspace_id": "NOPE"})
    assert refused.status_code == 403 and "read role" in refused.json()["error"]["reason"]
    assert con.ok("GET", "/api/workspaces")["workspaces"] == []  # nothing was created

    listed = con.ok("GET", "/api/tokens")["tokens"]
    assert {t["name"] for t in listed} == {"bootstrap", "viewer"}
    assert all("token" not in t and "token_sha256" not in t for t in listed)
    stored = con.console.tokens.all()
    assert viewer not in repr(stored) and all(len(t.token_sha256) == 64 for t in stored)

    again = con.admin("POST", "/api/tokens", json={"name": "viewer", "role": "admin"})
    assert again.status_code == 400 and "exists" in again.json()["error"]["reason"]
    bad_role = con.admin("POST", "/api/tokens", json={"name": "x", "role": "root"})
    assert (
        bad_role.status_code == 400
        and "role must be one of admin, read" in bad_role.json()["error"]["reason"]
    )

    assert con.admin("POST", "/api/tokens/viewer/revoke").status_code == 200
    assert con.call("GET", "/api/workspaces", viewer).status_code == 401

    refusal = audit_records(con, "workspace.create")
    assert (
        refusal[0]["actor"] == "viewer"
        and refusal[0]["outcome"] == "refused"
        and refusal[0]["role"] == "read"
    )
    created = audit_records(con, "token.create")
    assert {(r["actor"], r["target"], r["outcome"]) for r in created} == {
        ("bootstrap", "viewer", "ok"),
        ("bootstrap", "viewer", "refused"),
        ("bootstrap", "x", "refused"),
    }
    assert all(datetime.fromisoformat(r["at"]) <= datetime.now(UTC) for r in created)
    assert viewer not in json.dumps(con.ok("GET", "/api/audit")), "a token never reaches the audit log"


def test_pages_need_a_login_and_the_read_role_is_offered_no_changes(con: RunningConsole) -> None:
    for path in ("/", "/imports", "/streams", "/workspaces", "/topics", "/audit"):
        page = con.session.get(con.url + path, allow_redirects=False, timeout=30)
        assert page.status_code == 303 and page.headers["Location"] == "/login", path
    con.ok("POST", "/api/streams", json={"id": "s1", "url": "http://127.0.0.1:9/x"})
    viewer = con.ok("POST", "/api/tokens", json={"name": "viewer", "role": "read"})["token"]
    con.session.post(con.url + "/login", data={"token": viewer}, timeout=30)
    for path in ("/", "/imports", "/streams", "/workspaces", "/topics", "/audit"):
        page = con.session.get(con.url + path, timeout=60)
        assert page.status_code == 200 and "viewer (read)" in page.text, path
        assert "data-call=" not in page.text and "data-api=" not in page.text, path
        assert (
            page.headers["X-Frame-Options"] == "DENY"
            and "default-src 'self'" in page.headers["Content-Security-Policy"]
        )
    streams = con.session.get(con.url + "/streams", timeout=60).text
    assert 'data-stream="s1"' in streams and "running" in streams


def test_cookie_session_needs_the_console_header_for_changes(con: RunningConsole) -> None:
    login = con.session.post(con.url + "/login", data={"token": "wrong"}, allow_redirects=False, timeout=30)
    assert login.status_code == 401
    login = con.session.post(con.url + "/login", data={"token": con.admin_token}, allow_redirects=False)
    assert login.status_code == 303 and "HttpOnly" in login.headers["Set-Cookie"]
    assert "SameSite=Strict" in login.headers["Set-Cookie"]
    assert con.call("GET", "/api/whoami").json()["name"] == "bootstrap"
    forged = con.call("POST", "/api/workspaces", json={"workspace_id": "W1"})
    assert forged.status_code == 403 and "X-Inflow-Console" in forged.json()["error"]["reason"]
    made = con.call("POST", "/api/workspaces", json={"workspace_id": "W1"}, headers={"X-Inflow-Console": "1"})
    assert made.status_code == 200, made.text
    con.session.post(con.url + "/logout", allow_redirects=False)
    assert con.call("GET", "/api/whoami").status_code == 401


def test_workspace_operations_and_bad_input(con: RunningConsole) -> None:
    made = con.ok(
        "POST",
        "/api/workspaces",
        json={"workspace_id": "ACME", "identifiers": ["email"], "users_per_minute": 50},
    )
    key = made["data_api_key"]
    stored = con.console.ops.workspaces.get("ACME")
    assert stored is not None and verify_key(key, stored.key_hash) and key not in stored.key_hash
    assert made["workspace"]["identifiers"] == ["email"] and made["workspace"]["users_per_minute"] == 50
    listed = con.ok("GET", "/api/workspaces")["workspaces"]
    assert [w["workspace_id"] for w in listed] == ["ACME"] and "key_hash" not in listed[0]

    rotated = con.ok("POST", "/api/workspaces/ACME/rotate-key", json={})
    assert rotated["workspace"]["key_version"] == 2 and rotated["data_api_key"] != key
    assert con.ok("POST", "/api/workspaces/ACME/disable")["disabled"] is True
    assert con.ok("POST", "/api/workspaces/ACME/enable")["disabled"] is False
    limits = con.ok(
        "PUT", "/api/workspaces/ACME/limits", json={"users_per_minute": 7, "events_per_minute": 9}
    )
    assert (limits["users_per_minute"], limits["events_per_minute"]) == (7, 9)

    def reason(response: Any, status: int) -> str:
        assert response.status_code == status, response.text
        return str(response.json()["error"]["reason"])

    assert "already exists" in reason(
        con.admin("POST", "/api/workspaces", json={"workspace_id": "ACME"}), 400
    )
    assert "must be 1-64" in reason(con.admin("POST", "/api/workspaces", json={"workspace_id": "a:b"}), 400)
    assert "at most 5 identifiers" in reason(
        con.admin("POST", "/api/workspaces", json={"workspace_id": "B", "identifiers": list("abcde")}), 400
    )
    assert "users_per_minute" in reason(
        con.admin("PUT", "/api/workspaces/ACME/limits", json={"users_per_minute": 0}), 400
    )
    assert "whole number" in reason(
        con.admin("PUT", "/api/workspaces/ACME/limits", json={"events_per_minute": "many"}), 400
    )
    assert "does not exist" in reason(con.admin("POST", "/api/workspaces/NOPE/disable"), 404)
    assert "not valid JSON" in reason(
        con.admin("POST", "/api/workspaces", data=b"{nope", headers={"Content-Type": "application/json"}), 400
    )
    assert "JSON object" in reason(con.admin("POST", "/api/workspaces", json=[1, 2]), 400)
    assert "over 65536 bytes" in reason(
        con.admin("POST", "/api/workspaces", json={"workspace_id": "x" * 70_000}), 413
    )
    actions = [(r["action"], r["target"], r["outcome"]) for r in con.ok("GET", "/api/audit")["records"]]
    for expected in [
        ("workspace.create", "ACME", "ok"),
        ("workspace.rotate_key", "ACME", "ok"),
        ("workspace.disable", "ACME", "ok"),
        ("workspace.enable", "ACME", "ok"),
        ("workspace.limits", "ACME", "ok"),
        ("workspace.create", "ACME", "refused"),
        ("workspace.disable", "NOPE", "refused"),
    ]:
        assert expected in actions
    audit_text = json.dumps(con.ok("GET", "/api/audit"))
    assert key not in audit_text and rotated["data_api_key"] not in audit_text


def test_stream_operations_test_endpoint_and_dlq_redrive(
    con: RunningConsole, catalogue_topics: KafkaSettings
) -> None:
    ok_endpoint = RecordingEndpoint().start()
    failing = RecordingEndpoint(default=503).start()
    try:
        defined = con.admin(
            "POST",
            "/api/streams",
            json={"id": "s1", "url": ok_endpoint.url + "?token=abc", "app_name": "shop", "batch_size": 10},
        )
        assert defined.status_code == 201, defined.text
        assert "abc" not in defined.text, "query values are masked"
        con.ok("POST", "/api/streams", json={"id": "s2", "url": failing.url})
        streams = {s["id"]: s for s in con.ok("GET", "/api/streams")["streams"]}
        assert streams["s1"]["state"] == "running" and streams["s1"]["source"] == "stored"

        tested = con.ok("POST", "/api/streams/s1/test")
        assert tested["result"] == "delivered" and tested["status"] == 200
        body = ok_endpoint.snapshot()[0].body
        assert body["app_name"] == "shop" and body["events"][0]["event_name"] == "INFLOW_TEST_EVENT"
        assert ok_endpoint.snapshot()[0].query == {"token": "abc"}
        failed = con.ok("POST", "/api/streams/s2/test")
        assert failed["result"] == "retriable" and failed["status"] == 503 and "HTTP 503" in failed["reason"]

        assert con.ok("POST", "/api/streams/s1/pause", json={"mode": "resume"})["mode"] == "resume"
        assert con.ok("GET", "/api/streams/s1")["state"] == "paused (resume)"
        twice = con.admin("POST", "/api/streams/s1/pause", json={})
        assert twice.status_code == 400 and "already paused" in twice.json()["error"]["reason"]
        con.ok("POST", "/api/streams/s1/resume")
        detail = con.ok("GET", "/api/streams/s1")
        assert detail["state"] == "running" and detail["retry_depth"] == 0 and detail["dlq_depth"] == 0

        dead = {
            "stream_id": "s1",
            "moe_request_id": "req-dead-1",
            "events_json": '[{"event_uuid": "e1"}]',
            "event_uuids": ["e1"],
            "attempt": 4,
            "attempts": [{"at": datetime.now(UTC), "status": 500, "error": "HTTP 500", "topic": "t"}],
            "due_at": datetime.now(UTC),
            "created_at": datetime.now(UTC),
        }
        producer = KafkaProducer(catalogue_topics, name="test-dlq")
        try:
            producer.publish_and_wait(
                catalogue_topics.topic("streams.dlq"), b"s1", SERDE.encode("StreamBatch", dead)
            )
        finally:
            producer.close()
        batches = con.ok("GET", "/api/dlq?stream=s1")["batches"]
        assert [(b["moe_request_id"], b["last_status"], b["events"]) for b in batches] == [
            ("req-dead-1", 500, 1)
        ]
        shown = con.ok("GET", "/api/dlq/req-dead-1")
        assert shown["events_json"] == [{"event_uuid": "e1"}] and shown["attempts"][0]["error"] == "HTTP 500"
        assert con.ok("GET", "/api/streams/s1")["dlq_depth"] == 1
        redriven = con.ok("POST", "/api/dlq/redrive", json={"ids": ["req-dead-1"]})
        assert redriven["redriven"][0]["moe_request_id"] == "req-dead-1"
        wait_for(
            lambda: con.ok("GET", "/api/streams/s1")["retry_depth"] == 1, 30, what="batch in the retry topic"
        )

        for method, path, body, status, words in [
            ("POST", "/api/streams", {"id": "bad id!", "url": ok_endpoint.url}, 400, "id"),
            ("POST", "/api/streams", {"id": "s3", "url": "ftp://x"}, 400, "url"),
            ("POST", "/api/streams", {"id": "s3", "url": ok_endpoint.url, "bogus": 1}, 400, "bogus"),
            ("POST", "/api/streams", {"id": "s1", "url": ok_endpoint.url}, 400, "exists"),
            ("POST", "/api/streams", {"id": "s4", "url": "http://169.254.169.254/x"}, 400, "169.254"),
            ("POST", "/api/streams/nope/pause", {}, 404, "no stream"),
            ("POST", "/api/streams/s1/pause", {"mode": "later"}, 400, "skip or resume"),
            ("GET", "/api/dlq/req-unknown", None, 404, "no dead batch"),
            ("POST", "/api/dlq/redrive", {}, 400, "name the batches"),
            ("POST", "/api/dlq/redrive", {"ids": "req-dead-1"}, 400, "list"),
        ]:
            response = con.admin(method, path, json=body)
            assert response.status_code == status, (path, body, response.text)
            assert words in response.json()["error"]["reason"], (path, body, response.text)

        assert con.ok("DELETE", "/api/streams/s2") == {"removed": "s2"}
        assert [s["id"] for s in con.ok("GET", "/api/streams")["streams"]] == ["s1"]
        actions = {(r["action"], r["target"], r["outcome"]) for r in con.ok("GET", "/api/audit")["records"]}
        assert {
            ("stream.define", "s1", "ok"),
            ("stream.test", "s1", "ok"),
            ("stream.pause", "s1", "ok"),
            ("stream.resume", "s1", "ok"),
            ("dlq.redrive", "-", "ok"),
            ("stream.remove", "s2", "ok"),
            ("stream.define", "bad id!", "refused"),
        } <= actions
    finally:
        ok_endpoint.stop()
        failing.stop()


USERS_CSV = (
    "ID,First Name,LTV,Installed,First Seen\nu1,Ann,10.5,true,2024-01-02 03:04:05\nu2,Bob,abc,false,\n"
)


def test_import_definition_run_history_and_error_report(
    con: RunningConsole, s3_settings: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No worker runs here: the run ends when its rows are written instead of waiting for their outcomes.
    monkeypatch.setenv("INFLOW_POLLER_TRACK_OUTCOMES", "false")
    s3 = boto3_client(s3_settings, str(s3_settings.endpoint_url))
    bucket = f"con-{unique}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="in/users/registered_user_data_20240102.csv", Body=USERS_CSV.encode())
    definition = {
        "name": f"users-{unique}",
        "workspace_id": "WS1",
        "type": "registered_users",
        "bucket": bucket,
        "folder": "in/users",
        "access_key": s3_settings.access_key_id,
        "secret_key": s3_settings.secret_access_key.get_secret_value(),
        "endpoint_url": s3_settings.endpoint_url,
        "date_format": "yyyymmdd",
        "mappings": USER_MAPPINGS,
    }
    name = definition["name"]
    created = con.admin("POST", "/api/imports", json={"definition": definition})
    assert created.status_code == 200, created.text
    assert s3_settings.secret_access_key.get_secret_value() not in created.text
    assert [i["name"] for i in con.ok("GET", "/api/imports")["imports"]] == [name]
    assert con.ok("GET", f"/api/imports/{name}")["secret_key"] == "**********"
    preview = con.ok("GET", f"/api/imports/{name}/preview")
    assert preview["columns"][:2] == ["ID", "First Name"] and preview["rows"][0][0] == "u1"

    job = con.admin("POST", f"/api/imports/{name}/run")
    assert job.status_code == 202, job.text
    done = wait_for(
        lambda: (j := con.ok("GET", f"/api/import-jobs/{job.json()['id']}"))["state"] != "RUNNING" and j,
        120,
        what="the import run",
    )
    assert done["state"] == "DONE" and done["files"][0]["status"] == "PARTIAL_SUCCESS", done
    runs = con.ok("GET", f"/api/imports/{name}/runs")["runs"]
    run = runs[0]
    assert (run["rows_total"], run["rows_added"], run["rows_failed"], run["rows_skipped"]) == (2, 1, 1, 0)
    assert run["status"] == "PARTIAL_SUCCESS" and run["error_report"] is True
    assert con.ok("GET", "/api/import-runs")["runs"][0]["run_id"] == run["run_id"]
    report = con.admin("GET", f"/api/imports/{name}/runs/{run['run_id']}/error-report")
    assert report.status_code == 200 and report.headers["Content-Type"].startswith("text/csv")
    assert report.text.splitlines()[0] == "row,reason" and "is not a double" in report.text

    con.session.post(con.url + "/login", data={"token": con.admin_token}, timeout=30)
    page = con.session.get(con.url + "/imports", timeout=60).text
    link = f"/api/imports/{name}/runs/{run['run_id']}/error-report"
    assert "registered_user_data_20240102.csv" in page and "PARTIAL_SUCCESS" in page and link in page
    assert "is not a double" in con.session.get(con.url + link, timeout=60).text
    con.session.post(con.url + "/logout", timeout=30)

    folder = Folder(con.console.ops._definition(name), None)
    with pytest.raises(FetchError, match="is not an error report of this import"):
        folder.read_report("in/users/registered_user_data_20240102.csv", 1000)
    with pytest.raises(FetchError, match="over 10 bytes"):
        folder.read_report(f"in/users/{REPORT_FOLDER}/registered_user_data_20240102.csv.errors.csv", 10)

    missing = con.admin("GET", f"/api/imports/{name}/runs/no-such-run/error-report")
    assert missing.status_code == 404 and "no run" in missing.json()["error"]["reason"]
    assert con.admin("GET", "/api/imports/nope/runs").status_code == 404
    duplicate = con.admin("POST", "/api/imports", json={"definition": definition})
    assert duplicate.status_code == 400 and "already been used" in duplicate.json()["error"]["reason"]
    broken = con.admin("POST", "/api/imports", json={"definition": definition | {"folder": "/", "name": "b"}})
    assert broken.status_code == 400 and "folder" in broken.json()["error"]["reason"]
    assert con.admin("POST", "/api/imports", json={"definition": "x"}).status_code == 400
    actions = {(r["action"], r["target"], r["outcome"]) for r in con.ok("GET", "/api/audit")["records"]}
    assert {
        ("import.create", name, "ok"),
        ("import.run", name, "ok"),
        ("import.create", name, "refused"),
    } <= actions
    assert s3_settings.secret_access_key.get_secret_value() not in json.dumps(con.ok("GET", "/api/audit"))


def test_topics_consumer_lag_and_component_health(
    console_factory: Callable[..., RunningConsole], catalogue_topics: KafkaSettings
) -> None:
    metrics = web.Application()

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def prom(request: web.Request) -> web.Response:
        text = (
            "# TYPE inflow_streams_delivered_events counter\n"
            'inflow_streams_delivered_events_total{stream="s1"} 42\n'
            "# TYPE inflow_streams_dead_lettered_batches counter\n"
            'inflow_streams_dead_lettered_batches_total{stream="s1"} 3\n'
        )
        return web.Response(text=text, content_type="text/plain")

    metrics.router.add_get("/health", health)
    metrics.router.add_get("/metrics", prom)
    from tests.console.servers import serve_app

    failing = web.Application()

    async def unhealthy(request: web.Request) -> web.Response:
        return web.json_response({"status": "degraded", "kafka": "unavailable"}, status=503)

    failing.router.add_get("/health", unhealthy)
    with serve_app(metrics) as sink_url, serve_app(failing) as poller_url:
        con = console_factory(components={"sink": sink_url, "poller": poller_url})
        topics = {t["short_name"]: t for t in con.ok("GET", "/api/topics")["topics"]}
        assert topics["events"]["partitions"] == 6 and topics["control.admin-tokens"]["exists"]
        assert topics["control.audit"]["cleanup_policy"] == "delete"

        group = f"{catalogue_topics.topic_prefix}.streams.s1"
        producer = KafkaProducer(catalogue_topics, name="test-events")
        try:
            for i in range(5):
                producer.publish_and_wait(catalogue_topics.topic("events"), b"k", b"v%d" % i, partition=0)
        finally:
            producer.close()
        from inflow.kafka.clients import new_consumer

        consumer = new_consumer(catalogue_topics, group)
        from confluent_kafka import TopicPartition

        consumer.commit(offsets=[TopicPartition(catalogue_topics.topic("events"), 0, 2)], asynchronous=False)
        consumer.close()
        groups = {g["group"]: g for g in con.ok("GET", "/api/consumer-groups")["groups"]}
        assert groups[group]["lag"] == 3 and groups[group]["component"] == "sink"
        assert groups[group]["topics"][catalogue_topics.topic("events")]["0"] == {
            "committed": 2,
            "end": 5,
            "lag": 3,
        }

        def sampled() -> dict[str, Any] | None:
            data = con.ok("GET", "/api/overview")
            by_name = {c["component"]: c for c in data["components"]}
            return data if by_name.get("sink", {}).get("lag") == 3 else None

        overview = wait_for(sampled, 30, what="a sample with the sink's lag")
        by_name = {c["component"]: c for c in overview["components"]}
        assert by_name["sink"]["status"] == "up" and by_name["sink"]["errors"] == 3
        assert by_name["gateway"]["status"] == "unreachable" and by_name["worker"]["lag"] is None
        assert (
            by_name["poller"]["status"] == "unhealthy"
            and by_name["poller"]["health"]["kafka"] == "unavailable"
        )
        assert overview["streams"]["s1"]["delivered"] == 42
        assert overview["totals"]["enriched"] == 5
        health_now = con.ok("GET", "/api/health")["components"]
        assert {c["component"]: c["status"] for c in health_now}["sink"] == "up"
