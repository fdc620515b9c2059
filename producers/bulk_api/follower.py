"""Materialized views of Kafka topics: read a topic from the beginning, then keep following it.

Used for the workspace credentials, the shared rate-limit counts and the profile store. ``ready`` is set
once every partition has been read up to the end offsets seen at start, so a view never answers from a
half-read topic.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from inflow.config.settings import KafkaSettings
from inflow.producers.bulk_api.exceptions import GatewayError

log = logging.getLogger(__name__)
Handler = Callable[[bytes | None, bytes | None], None]


class TopicFollower:
    """One consumer thread assigned every partition of one topic (no group, no commits)."""

    def __init__(self, kafka: KafkaSettings, topic: str, handle: Handler, *, retry_s: float = 1.0) -> None:
        self.kafka = kafka
        self.topic = topic
        self.handle = handle
        self.retry_s = retry_s
        self.ready = threading.Event()
        self.problem: str | None = "not started"
        self.records = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"follow-{topic}", daemon=True)

    def start(self) -> TopicFollower:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def wait_ready(self, timeout: float) -> bool:
        return self.ready.wait(timeout)

    def _run(self) -> None:
        conf = self.kafka.consumer_config(
            f"inflow-gateway-view-{uuid.uuid4().hex}",
            **{"fetch.wait.max.ms": 50, "socket.timeout.ms": 10_000},
        )
        consumer = Consumer(conf)
        try:
            targets = self._assign(consumer)
            if targets is not None:
                self._follow(consumer, targets)
        except Exception as exc:  # the view reports the problem; the gateway answers 503 instead of crashing
            self.problem = f"following {self.topic} failed: {exc}"
            log.exception("following %s failed", self.topic)
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer) -> dict[int, int] | None:
        """Wait for the topic to exist, assign all partitions from the start; return end offsets to reach."""
        while not self._stop.is_set():
            try:
                metadata = consumer.list_topics(self.topic, timeout=5)
                found = metadata.topics.get(self.topic)
                if found is not None and found.error is None and found.partitions:
                    partitions = sorted(found.partitions)
                    targets = {}
                    for p in partitions:
                        low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=5)
                        if high > low:
                            targets[p] = high
                    consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
                    self.problem = None if not targets else f"reading {self.topic} to its end"
                    return targets
                self.problem = f"topic {self.topic} does not exist"
            except KafkaException as exc:
                self.problem = f"cannot read topic {self.topic}: {exc.args[0]}"
            self._stop.wait(self.retry_s)
        return None

    def _follow(self, consumer: Consumer, targets: dict[int, int]) -> None:
        pending = dict(targets)
        if not pending:
            self.ready.set()
        while not self._stop.is_set():
            for msg in consumer.consume(num_messages=500, timeout=0.2):
                if msg.error():
                    log.warning("%s: %s", self.topic, msg.error())
                    continue
                try:
                    self.handle(msg.key(), msg.value())
                except Exception:  # one bad record must not stop the view
                    log.exception("%s: cannot apply record at offset %s", self.topic, msg.offset())
                self.records += 1
            if pending:
                self._check_caught_up(consumer, pending)

    def _check_caught_up(self, consumer: Consumer, pending: dict[int, int]) -> None:
        positions = consumer.position([TopicPartition(self.topic, p) for p in pending])
        for tp in positions:
            if tp.offset >= pending[tp.partition]:
                del pending[tp.partition]
        if not pending:
            self.problem = None
            self.ready.set()


def read_to_end(kafka: KafkaSettings, topic: str, handle: Handler, timeout: float = 30.0) -> None:
    """Read a whole topic once (CLI commands); a missing topic fails after ``missing_after`` seconds."""
    follower = TopicFollower(kafka, topic, handle).start()
    missing_after = min(timeout, 5.0)
    try:
        started = time.monotonic()
        while not follower.wait_ready(0.2):
            waited = time.monotonic() - started
            problem = follower.problem or ""
            if waited > timeout or (waited > missing_after and "does not exist" in problem):
                hint = (
                    " (create the topics with `inflow topics create`)" if "does not exist" in problem else ""
                )
                raise GatewayError(f"cannot read {topic}: {problem or 'timed out'}{hint}")
    finally:
        follower.stop()
