"""Both client stacks against the real broker: confluent-kafka, and aiokafka/faust-streaming."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.support import consume_n, wait_for


def test_confluent_produce_and_consume_in_a_group(topic_factory, producer_factory, consumer_factory):
    topic = topic_factory(partitions=3)
    producer = producer_factory()
    for i in range(30):
        producer.produce(topic, key=f"k{i % 5}".encode(), value=f"v{i}".encode())
    assert producer.flush(15) == 0
    consumer = consumer_factory([topic])
    messages = consume_n(consumer, 30)
    assert sorted(m.value() for m in messages) == sorted(f"v{i}".encode() for i in range(30))
    # Records of one key stay in order on one partition.
    by_key: dict[bytes, list[int]] = {}
    for m in messages:
        by_key.setdefault(m.key(), []).append(int(m.value()[1:]))
    assert all(seq == sorted(seq) for seq in by_key.values())
    consumer.commit(asynchronous=False)
    committed = consumer.committed(consumer.assignment(), timeout=10)
    assert sum(tp.offset for tp in committed) == 30


def test_aiokafka_round_trip_with_consumer_group(kafka_bootstrap, topic_factory, unique):
    topic = topic_factory(partitions=2)

    async def run() -> list[bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            for i in range(10):
                await producer.send_and_wait(topic, f"a{i}".encode(), key=b"same")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=f"aio-{unique}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            got: list[bytes] = []
            while len(got) < 10:
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=500), 60)
                for records in batch.values():
                    got.extend(r.value for r in records)
            await consumer.commit()
            return got
        finally:
            await consumer.stop()

    assert asyncio.run(run()) == [f"a{i}".encode() for i in range(10)]


FAUST_APP = textwrap.dedent(
    """
    import sys
    import faust

    broker, prefix, datadir = sys.argv[1], sys.argv[2], sys.argv[3]
    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
    app = faust.App(prefix, broker=f"kafka://{broker}", store="rocksdb://", datadir=datadir,
                    topic_partitions=2, web_enabled=False, topic_allow_declare=True)
    source = app.topic(f"{prefix}-in", key_type=str, value_type=str, value_serializer="raw",
                       key_serializer="raw", partitions=2)
    out = app.topic(f"{prefix}-out", key_type=str, value_type=str, value_serializer="raw",
                    key_serializer="raw", partitions=2)
    counts = app.Table("counts", default=int, partitions=2)

    @app.agent(source)
    async def count(stream):
        async for key, value in stream.items():
            counts[key] += 1
            await out.send(key=key, value=f"{key}={counts[key]}")

    app.main()
    """
)


def test_faust_table_round_trip_survives_restart(
    kafka_bootstrap, topic_factory, producer_factory, consumer_factory, unique, tmp_path: Path
):
    prefix = f"faust{unique}"
    topic_factory(f"{prefix}-in", partitions=2)
    out_topic = topic_factory(f"{prefix}-out", partitions=2)
    script = tmp_path / "app.py"
    script.write_text(FAUST_APP)
    producer = producer_factory()
    consumer = consumer_factory([out_topic])
    seen: list[bytes] = []

    def run_worker_until(expected: bytes, datadir: Path) -> None:
        proc = subprocess.Popen(
            [sys.executable, str(script), kafka_bootstrap, prefix, str(datadir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:

            def arrived() -> bool:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
                seen.extend(m.value() for m in consumer.consume(100, 0.5) if not m.error())
                return expected in seen

            wait_for(arrived, timeout=120, what=f"{expected!r} from the faust worker")
        finally:
            proc.terminate()
            proc.wait(60)

    for _ in range(3):
        producer.produce(f"{prefix}-in", key=b"alice", value=b"x")
    producer.flush(10)
    run_worker_until(b"alice=3", tmp_path / "data1")
    # A new worker with an empty data dir rebuilds the table from its changelog topic.
    producer.produce(f"{prefix}-in", key=b"alice", value=b"x")
    producer.flush(10)
    run_worker_until(b"alice=4", tmp_path / "data2")
