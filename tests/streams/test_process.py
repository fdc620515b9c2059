"""The sink as a real process (`inflow sink`): killed mid-batch, restarted, nothing lost; SIGTERM exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml
from cryptography.fernet import Fernet

from inflow.config.settings import KafkaSettings
from inflow.local.process import free_port
from tests.streams.conftest import enriched
from tests.support import wait_for


def sink_env(kafka: KafkaSettings, tmp_path: Path, streams: list[dict]) -> dict[str, str]:
    config = tmp_path / "inflow.yaml"
    config.write_text(yaml.safe_dump({"streams": streams}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "S3_", "INFLOW_"))}
    return env | {
        "KAFKA_BOOTSTRAP_SERVERS": str(kafka.bootstrap_servers),
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "INFLOW_HOME": str(tmp_path / "home"),
        "INFLOW_CONFIG": str(config),
        "INFLOW_SECRET_KEY": Fernet.generate_key().decode(),
        "PYTHONUNBUFFERED": "1",
    }


def delivered_metric(port: int) -> float:
    """The sink's Prometheus counter of delivered events for stream s1 (0 until it is served)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith('inflow_streams_delivered_events_total{stream="s1"}'):
            return float(line.split()[-1])
    return 0.0


def start_sink(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "inflow.cli", "sink"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_sink_killed_mid_batch_and_restarted_loses_nothing(
    catalogue_topics, writer, endpoint_factory, tmp_path
):
    ep = endpoint_factory(delay_s=0.2)
    streams = [
        {
            "id": "s1",
            "url": ep.url,
            "batch_size": 50,
            "linger_s": 0.2,
            "max_in_flight": 2,
            "start_at": "2000-01-01T00:00:00Z",  # the events are written before the sink first runs
        }
    ]
    env = sink_env(catalogue_topics, tmp_path, streams)
    sent = set(writer.write([enriched(uid=f"u-{i % 13}") for i in range(1500)]))
    log = tmp_path / "sink.log"
    first = start_sink(env, log)
    try:
        wait_for(lambda: len(ep.snapshot()) >= 4, 90, what=f"some requests before the kill; log:\n{log}")
        os.kill(first.pid, signal.SIGKILL)  # mid-batch: requests are in flight
        first.wait(30)
        assert ep.delivered_uuids() != sent, "the kill came too late to prove anything"
        metrics_port = free_port()
        second = start_sink(env | {"INFLOW_SINK_METRICS_PORT": str(metrics_port)}, log)
        try:
            wait_for(lambda: ep.delivered_uuids() == sent, 120, what="every event after the restart")
            scraped = wait_for(lambda: delivered_metric(metrics_port), 30, what="the delivered-events metric")
            assert scraped >= len(sent) - 4 * 50  # all but what the first process delivered before the kill
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(30)
    assert "stream s1: started" in log.read_text()
