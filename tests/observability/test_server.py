"""The shared /metrics + /health server over real HTTP, health checks, the JSON log format and the
worker's metric objects with their server."""

from __future__ import annotations

import io
import json
import logging
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from inflow.config.settings import KafkaSettings, ObservabilitySettings
from inflow.observability import worker_metrics as wm
from inflow.observability.component import serve_component
from inflow.observability.health import Health, Heartbeat
from inflow.observability.logs import JsonFormatter, configure_logging
from inflow.observability.server import ObservabilityServer


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def served() -> Iterator[tuple[ObservabilityServer, dict[str, Any]]]:
    registry = CollectorRegistry()
    Counter("inflow_test_things", "things", ["kind"], registry=registry).labels("a").inc(3)
    state = {"ok": True}
    health = Health("tester")
    health.add("thing", lambda: (state["ok"], "fine" if state["ok"] else "broken"))
    server = ObservabilityServer(health, 0, registry=registry).start()
    yield server, state
    server.stop()


def test_metrics_and_health_answer_over_http(served: tuple[ObservabilityServer, dict[str, Any]]) -> None:
    server, _ = served
    code, text = get(server.url + "/metrics")
    assert code == 200 and 'inflow_test_things_total{kind="a"} 3.0' in text
    code, text = get(server.url + "/health")
    assert code == 200
    assert json.loads(text) == {
        "status": "ok",
        "component": "tester",
        "checks": {"thing": {"ok": True, "detail": "fine"}},
    }


def test_a_failing_check_answers_503_with_the_reason(
    served: tuple[ObservabilityServer, dict[str, Any]],
) -> None:
    server, state = served
    state["ok"] = False
    code, text = get(server.url + "/health")
    assert code == 503
    body = json.loads(text)
    assert body["status"] == "failing" and body["checks"]["thing"] == {"ok": False, "detail": "broken"}


def test_a_check_that_raises_fails_without_its_text(
    served: tuple[ObservabilityServer, dict[str, Any]],
) -> None:
    server, _ = served

    def broken() -> tuple[bool, str]:
        raise RuntimeError("secret-host:9092 refused")

    server.health.add("broken", broken)
    code, text = get(server.url + "/health")
    assert code == 503 and "secret-host" not in text
    assert json.loads(text)["checks"]["broken"] == {"ok": False, "detail": "check failed: RuntimeError"}


def test_unknown_path_is_404(served: tuple[ObservabilityServer, dict[str, Any]]) -> None:
    code, text = get(served[0].url + "/nope")
    assert code == 404 and json.loads(text)["paths"] == ["/metrics", "/health"]


def test_heartbeat_fails_before_the_first_beat_and_after_a_silence() -> None:
    beat = Heartbeat(max_age_s=3600)
    assert beat() == (False, "not started")
    beat.beat()
    assert beat()[0]
    stale = Heartbeat(max_age_s=-1)  # any age is too old
    stale.beat()
    ok, detail = stale()
    assert not ok and detail.startswith("no progress for")


def test_a_taken_port_moves_the_server_to_a_free_one(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        registry = CollectorRegistry()
        served = serve_component("poller", port=taken, registry=registry)
        try:
            assert served.server.port != taken
            code, text = get(served.url + "/health")
            assert code == 200 and json.loads(text)["component"] == "poller"
            assert f"port {taken} is taken" in caplog.text and str(served.server.port) in caplog.text
        finally:
            served.stop()


def test_json_logs_carry_the_fields_and_the_ids() -> None:
    record = logging.LogRecord("inflow.test", logging.WARNING, __file__, 1, "sent %d", (3,), None)
    record.request_id = "req-1"
    record.event_id = "ev-1"
    line = json.loads(JsonFormatter("gateway").format(record))
    assert line["level"] == "WARNING" and line["component"] == "gateway" and line["logger"] == "inflow.test"
    assert line["message"] == "sent 3" and line["request_id"] == "req-1" and line["event_id"] == "ev-1"
    assert line["time"].endswith("+00:00")


def test_configure_logging_switches_format_and_keeps_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    first = configure_logging("sink", "debug", ObservabilitySettings(log_format="text"))
    masking = logging.Filter("inflow")  # passes inflow.* records only
    first.addFilter(masking)
    try:
        handler = configure_logging("sink", "info", ObservabilitySettings(log_format="json"))
        assert masking in handler.filters and root.handlers == [handler]
        logging.getLogger("inflow.x").info("hello", extra={"event_id": "e9"})
        logging.getLogger("other").info("filtered out")
        lines = [json.loads(x) for x in stream.getvalue().splitlines()]
        assert [(x["message"], x["event_id"], x["component"]) for x in lines] == [("hello", "e9", "sink")]
        with pytest.raises(ValueError, match="unknown log level"):
            configure_logging("sink", "loud")
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


def test_worker_metrics_and_server(kafka_settings: KafkaSettings) -> None:
    wm.RECORDS_APPLIED.labels("W1", "user").inc(2)
    wm.MERGES.labels("W1").inc()
    wm.REJECTIONS.labels("W1", wm.reason_class("the profile is too large to publish")).inc()
    wm.BATCH_APPLY.observe(0.02)
    registry = CollectorRegistry()
    for metric in (wm.RECORDS_APPLIED, wm.MERGES, wm.REJECTIONS, wm.BATCH_APPLY):
        registry.register(metric)
    served = wm.serve_worker(kafka_settings, port=0, registry=registry)
    try:
        assert get(served.url + "/health")[0] == 503  # the loop has not beaten yet
        served.heartbeat.beat()
        code, text = get(served.url + "/health")
        assert code == 200 and set(json.loads(text)["checks"]) == {"loop", "consumer_lag"}
        _, metrics = get(served.url + "/metrics")
        for name in (
            'inflow_worker_records_applied_total{type="user",workspace="W1"}',
            'inflow_worker_merges_total{workspace="W1"}',
            'inflow_worker_rejections_total{reason="too_large",workspace="W1"}',
            "inflow_worker_batch_apply_seconds_count",
            "# TYPE inflow_consumer_lag gauge",
        ):
            assert name in metrics, name
    finally:
        served.stop()


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("the UserProfile is too large to publish: 2000000 bytes", "too_large"),
        ("unreadable message: not Avro", "unreadable"),
        ("customer_id is blocked", "blocked_identifier"),
        (
            "Fair usage policy: user customer_id 'u1' blocked until 2026-12-03T09:00:00Z after more than "
            "5000 data requests in 1 minute",
            "fair_usage",
        ),
        ("something else entirely", "other"),
    ],
)
def test_reason_classes_bound_the_label(reason: str, expected: str) -> None:
    assert wm.reason_class(reason) == expected
