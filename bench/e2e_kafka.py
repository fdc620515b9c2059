"""Kafka-side measures of the end-to-end bench: consumer-group lag sampled during the run, and the raw
baseline (the same record bytes through two bare Kafka hops, as the pipeline's records travel through two).

Both go through ``inflow.kafka.clients`` (``new_admin``, ``new_consumer``, ``new_producer``). Groups are
found by the run's topic prefix, not by name, so the bench needs no change when the processors' groups
change.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from confluent_kafka import OFFSET_BEGINNING, Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import NewTopic, OffsetSpec

from inflow.config.settings import KafkaSettings
from inflow.kafka.clients import new_admin, new_consumer, new_producer, topic_partitions


# --- consumer lag ----------------------------------------------------------------------------------------
@dataclass
class LagSample:
    t: float  # time.monotonic()
    lag: dict[str, int]  # group -> records behind the end of the partitions it has committed


@dataclass
class LagSampler:
    """Every ``interval`` s: each consumer group of the prefix, sum over its committed partitions of
    (end offset - committed offset). Partitions a group has not committed yet are not counted."""

    kafka: KafkaSettings
    interval: float = 2.0
    samples: list[LagSample] = field(default_factory=list)
    errors: int = 0

    def __post_init__(self) -> None:
        self._admin = new_admin(self.kafka)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-sampler", daemon=True)

    def start(self) -> LagSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(LagSample(time.monotonic(), self.sample()))
            except Exception:  # noqa: BLE001 - a missed sample is counted, never fatal to the bench
                self.errors += 1
            self._stop.wait(self.interval)

    def sample(self) -> dict[str, int]:
        prefix = self.kafka.topic_prefix + "."
        listed = self._admin.list_consumer_groups(request_timeout=10).result()
        groups = sorted(g.group_id for g in listed.valid if g.group_id.startswith(prefix))
        committed: dict[str, list[TopicPartition]] = {}
        for g in groups:
            futures = self._admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(g)])
            tps = futures[g].result().topic_partitions or []
            committed[g] = [tp for tp in tps if tp.offset >= 0]
        wanted = {TopicPartition(tp.topic, tp.partition) for tps in committed.values() for tp in tps}
        if not wanted:
            return {g: 0 for g in groups}
        ends = self._admin.list_offsets({tp: OffsetSpec.latest() for tp in wanted}, request_timeout=10)
        end = {(tp.topic, tp.partition): f.result().offset for tp, f in ends.items()}
        return {
            g: sum(max(0, end[(tp.topic, tp.partition)] - tp.offset) for tp in tps)
            for g, tps in committed.items()
        }

    def members(self, group_part: str) -> int:
        """Members with partitions of the prefix's group whose name contains ``group_part`` (0 if none)."""
        prefix = self.kafka.topic_prefix + "."
        listed = self._admin.list_consumer_groups(request_timeout=10).result()
        groups = [
            g.group_id for g in listed.valid if g.group_id.startswith(prefix) and group_part in g.group_id
        ]
        if not groups:
            return 0
        described = self._admin.describe_consumer_groups(groups, request_timeout=10)
        return max(
            sum(1 for m in f.result().members if m.assignment and m.assignment.topic_partitions)
            for f in described.values()
        )

    def at(self, t: float) -> dict[str, int]:
        """The sample nearest to ``t``."""
        if not self.samples:
            return {}
        return min(self.samples, key=lambda s: abs(s.t - t)).lag

    def mean(self, t0: float, t1: float) -> dict[str, float]:
        inside = [s for s in self.samples if t0 <= s.t <= t1]
        groups = {g for s in inside for g in s.lag}
        return {g: sum(s.lag.get(g, 0) for s in inside) / len(inside) for g in groups}

    def peak(self, t0: float, t1: float) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.samples:
            if t0 <= s.t <= t1:
                for g, v in s.lag.items():
                    out[g] = max(out.get(g, 0), v)
        return out


# --- raw baseline ----------------------------------------------------------------------------------------
def read_records(kafka: KafkaSettings, topics: list[str], limit: int) -> list[tuple[bytes | None, bytes]]:
    """Up to ``limit`` (key, value) pairs from the start of ``topics`` (the bytes the gateway wrote)."""
    consumer = new_consumer(kafka, f"{kafka.topic_prefix}.bench.raw-read", **{"enable.auto.commit": False})
    try:
        tps, todo = [], 0
        for topic in topics:
            for p in topic_partitions(consumer, topic):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high > low:
                    tps.append(TopicPartition(topic, p, OFFSET_BEGINNING))
                    todo += high - low
        consumer.assign(tps)
        out: list[tuple[bytes | None, bytes]] = []
        deadline = time.monotonic() + 120
        target = min(limit, todo)
        while len(out) < target and time.monotonic() < deadline:
            for m in consumer.consume(10_000, 1.0):
                value = m.value()
                if m.error() is None and value is not None:
                    out.append((m.key(), value))
        return out[:limit]
    finally:
        consumer.close()


@dataclass
class RawResult:
    records: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def _assigned(kafka: KafkaSettings, topic: str, role: str, partitions: int) -> Consumer:
    c = new_consumer(kafka, f"{kafka.topic_prefix}.bench.raw-{role}", **{"enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    return c


def _copy(kafka: KafkaSettings, src: str, dst: str, partitions: int, n: int, conn: Connection) -> None:
    """Raw hop 2, a process of its own: consume ``src``, produce each record's bytes to ``dst``."""
    c = _assigned(kafka, src, "copier", partitions)
    p = new_producer(kafka)
    conn.send("ready")
    copied = 0
    while copied < n:
        for m in c.consume(5_000, 0.5):
            if m.error() is None:
                while True:
                    try:
                        p.produce(dst, m.value(), m.key())
                        break
                    except BufferError:
                        p.poll(0.05)
                copied += 1
        p.poll(0)
    p.flush(60)
    c.close()
    conn.send(copied)


def _read(kafka: KafkaSettings, src: str, partitions: int, n: int, conn: Connection) -> None:
    """Raw hop 2's reader, a process of its own: consume ``src`` until ``n`` records; send the time."""
    c = _assigned(kafka, src, "reader", partitions)
    conn.send("ready")
    seen = 0
    while seen < n:
        seen += sum(m.error() is None for m in c.consume(10_000, 0.5))
    conn.send(time.monotonic())
    c.close()


def raw_two_hops(
    kafka: KafkaSettings, records: list[tuple[bytes | None, bytes]], partitions: int
) -> RawResult:
    """Producer (this process) → topic A → bare copier process (consume, produce) → topic B → bare reader
    process, all at once, like the pipeline's gateway → worker → sink. Producers are the durable ones of
    ``inflow.kafka.clients`` (acks=all, idempotence, lz4) without per-record callbacks. Time from the first
    produce to the last record read from B."""
    a, b = f"{kafka.topic_prefix}.bench.raw-a", f"{kafka.topic_prefix}.bench.raw-b"
    admin = new_admin(kafka)
    for f in admin.create_topics([NewTopic(name, partitions, 1) for name in (a, b)]).values():
        f.result(30)
    for name in (a, b):
        topic_partitions(admin, name)
    n = len(records)
    ctx = mp.get_context("spawn")
    copier_conn, copier_child = ctx.Pipe()
    reader_conn, reader_child = ctx.Pipe()
    procs = [
        ctx.Process(target=_copy, args=(kafka, a, b, partitions, n, copier_child), daemon=True),
        ctx.Process(target=_read, args=(kafka, b, partitions, n, reader_child), daemon=True),
    ]
    for proc in procs:
        proc.start()
    try:
        for conn in (copier_conn, reader_conn):
            if not conn.poll(120):
                raise RuntimeError("a raw baseline process did not start")
            conn.recv()
        producer = new_producer(kafka)
        started = time.monotonic()
        for key, value in records:
            while True:
                try:
                    producer.produce(a, value, key)
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.flush(60)
        if not reader_conn.poll(300):
            raise RuntimeError("the raw baseline's reader did not read every record within 300 s")
        finished = float(reader_conn.recv())
        return RawResult(n, finished - started)
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(10)
