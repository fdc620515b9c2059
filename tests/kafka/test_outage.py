"""A broker that goes away and comes back: the patient flush waits the outage out instead of failing the
batch (a worker used to exit after 60 s of broker outage). Uses a broker of its own, stopped and restarted
on the same data and ports."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic

from inflow.config.settings import LocalKafkaSettings
from inflow.kafka.clients import new_admin
from inflow.kafka.producer import KafkaProducer
from inflow.kafka.view import CompactedView
from inflow.local.kafka import LocalKafka
from inflow.local.process import free_port

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) or os.environ.get("INFLOW_TEST_DOCKER") == "1",
    reason="needs the local broker code to stop and restart a broker of its own",
)


async def test_patient_flush_waits_out_a_broker_restart(
    tmp_path: Path, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = Path(os.environ.get("INFLOW_CACHE_DIR", Path.home() / ".cache" / "inflow"))
    broker = LocalKafka(
        tmp_path, cache, LocalKafkaSettings(port=free_port(), controller_port=free_port(), heap="384m")
    )
    broker.start()
    try:
        kafka = broker.client_settings().model_copy(update={"topic_prefix": f"o{unique}"})
        topic = f"outage-{unique}"
        admin = new_admin(kafka)
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
        producer = KafkaProducer(kafka, name="patient")
        producer.publish_and_wait(topic, b"k", b"before")  # connected, topic known
        broker.stop()
        producer.produce(topic, b"during", b"k")
        caplog.set_level(logging.WARNING, logger="inflow.kafka.producer")
        waiting = asyncio.ensure_future(producer.flush_patiently_async(report_every_s=1.0))
        await asyncio.sleep(0)  # the flush runs while the broker is down
        deadline = asyncio.get_running_loop().time() + 60
        while "still waiting" not in caplog.text:
            assert asyncio.get_running_loop().time() < deadline, "no outage warning"
            assert not waiting.done(), "the flush ended while the broker was down"
            await asyncio.sleep(0.2)
        await asyncio.get_running_loop().run_in_executor(None, broker.start)
        await asyncio.wait_for(waiting, 120)
        producer.close()
        view = CompactedView.read(kafka, topic, timeout=60)
        assert view.records == 2 and view.data == {"k": b"during"}
    finally:
        broker.stop()
