"""The sink as a real process serves /metrics (deliveries, consumer lag of its stream's groups) and
/health on its port."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from inflow.config.settings import KafkaSettings
from inflow.local.process import free_port
from inflow.observability.logs import JsonFormatter
from tests.s3_import.test_observability import sample, scrape
from tests.streams.conftest import enriched, stream
from tests.streams.test_process import sink_env
from tests.support import wait_for


def test_sink_serves_delivery_and_lag_metrics_and_health(
    catalogue_topics: KafkaSettings, writer, endpoint_factory, tmp_path: Path
) -> None:
    ep = endpoint_factory()
    # The events are written before the sink first runs: the stream starts at a time before them.
    streams = [
        {"id": "s1", "url": ep.url, "batch_size": 20, "linger_s": 0.2, "start_at": "2000-01-01T00:00:00Z"}
    ]
    port = free_port()
    env = sink_env(catalogue_topics, tmp_path, streams) | {"INFLOW_LAG_INTERVAL_S": "0.5"}
    writer.write([enriched(uid=f"u-{i}") for i in range(60)])
    log = tmp_path / "sink.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inflow.cli", "sink", "--metrics-port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    group = f"{catalogue_topics.topic_prefix}.streams.s1"
    try:
        delivered = 'inflow_streams_delivered_events_total{stream="s1"}'
        wait_for(
            lambda: sample(scrape(base + "/metrics")[1], delivered) == 60,
            120,
            what=f"60 events delivered; log:\n{log.read_text(errors='replace')[-3000:]}",
        )
        events = catalogue_topics.topic("events")
        # Committed after the deliveries: the collector reads the group at 0 lag on each partition.
        text = wait_for(
            lambda: (
                (t := scrape(base + "/metrics")[1])
                and sample(t, f'inflow_consumer_group_lag{{group="{group}"}}') == 0
                and f'inflow_consumer_lag{{group="{group}",partition="0",topic="{events}"}}' in t
                and t
            ),
            60,
            what="the stream's group at lag 0",
        )
        assert sample(text, 'inflow_streams_request_latency_seconds_count{stream="s1"}') >= 3
        code, body = scrape(base + "/health")
        report = json.loads(body)
        assert code == 200 and report["component"] == "sink" and report["status"] == "ok"
        assert report["checks"]["streams"] == {"ok": True, "detail": "1 running, 0 held"}
        assert set(report["checks"]) == {"loop", "streams", "consumer_lag"}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


def test_a_dead_lettered_batch_is_logged_with_its_request_id(
    writer, endpoint_factory, sink_factory, caplog: pytest.LogCaptureFixture
) -> None:
    ep = endpoint_factory(default=503)
    caplog.set_level(logging.WARNING, logger="inflow.sinks.streams")
    sink_factory(stream(ep.url, retry_delays_s=[0.2]))
    writer.write([enriched(uid="u-dead")])

    def dead() -> logging.LogRecord | None:
        return next((r for r in caplog.records if "dead-lettered" in r.getMessage()), None)

    record = wait_for(dead, 60, what="the batch dead-lettered")
    line = json.loads(JsonFormatter("sink").format(record))
    assert line["stream"] == "s1" and line["level"] == "WARNING"
    assert line["request_id"] in {r.body["moe_request_id"] for r in ep.snapshot()}
