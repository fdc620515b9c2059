"""``CompactedView``: a compacted topic read into memory from its beginning, then followed.

Every table a component keeps from Kafka goes through this one class: workspace credentials and rate counts
(gateway), workspace identifiers (workers), import definitions, ledger and runs (poller, CLI), stream
definitions and pause states (sink, CLI). It

- assigns every partition of its topics from the beginning (no group, nothing committed), or in group mode
  only the partitions the group gives this member, each read from its beginning;
- applies each record through ``apply(msg)``; by default it keeps ``data[key] = decode(value)`` and drops a
  key on a tombstone. A record that ``apply`` cannot take is logged with its position and skipped: one bad
  record never stops a view;
- reports *caught up*: ``ready`` is set once every partition was read to the end offsets seen when it was
  assigned, so no caller answers from a half-read table; ``catch_up()`` reads to the current end now;
  ``read_until()`` waits for one's own write to come back (read-your-writes);
- runs in the caller's thread (``open`` / ``pump`` / ``catch_up``) or on a thread of its own (``start``).
  Never both: a confluent-kafka consumer is used from one thread at a time.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from inflow.config.settings import KafkaSettings
from inflow.kafka.clients import consumer_config, topic_partitions, watermarks
from inflow.kafka.consumer import good_messages
from inflow.kafka.errors import KafkaFault, Kind, from_exception

log = logging.getLogger(__name__)
_ELECTING = frozenset(
    {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART}
)
TP = tuple[str, int]
Apply = Callable[[Message], None]
PartitionsHook = Callable[[list[TP]], None]


class CompactedView:
    """A dict-like table of one or more compacted topics, kept up to date."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: str | Sequence[str],
        *,
        apply: Apply | None = None,
        decode: Callable[[bytes], Any] = lambda value: value,
        name: str | None = None,
        group_id: str | None = None,
        on_assign: PartitionsHook | None = None,
        on_revoke: PartitionsHook | None = None,
        batch: int = 500,
        **overrides: Any,
    ) -> None:
        """``group_id`` turns on group mode: this member reads only the partitions the group assigns it,
        ``on_assign`` / ``on_revoke`` hear of each change (``on_revoke`` before the partitions go)."""
        self.kafka = kafka
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.name = name or "+".join(self.topics)
        self.data: dict[Any, Any] = {}
        self._apply = apply or self._keep
        self._decode = decode
        self._group_id = group_id
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._batch = batch
        self._overrides = overrides
        self._consumer: Consumer | None = None
        self._pending: dict[TP, int | None] = {}  # partitions still being read up to their start-time end
        self.applied: dict[TP, int] = {}  # last offset applied per partition
        self.ready = threading.Event()
        self.problem: str | None = "not started"
        self.records = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- default table ----------------------------------------------------------------------------
    def _keep(self, msg: Message) -> None:
        raw = msg.key()
        key = raw.decode() if isinstance(raw, bytes) else raw
        value = msg.value()
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = self._decode(value)

    def get(self, key: Any, default: Any = None) -> Any:
        return self.data.get(key, default)

    # --- reading in the caller's thread -----------------------------------------------------------
    def open(self, timeout: float = 30.0, missing_after: float = 5.0) -> CompactedView:
        """Create the consumer and assign the topics (or join the group); raises when a topic is still
        missing after ``missing_after`` seconds (a just-created topic can take a moment to show)."""
        if self._consumer is not None:
            return self
        group = self._group_id or f"{self.kafka.topic_prefix}.view-{uuid.uuid4().hex[:12]}"
        overrides = {"fetch.wait.max.ms": 50, "socket.timeout.ms": 10_000} | self._overrides
        if self._group_id is not None:
            overrides = {"partition.assignment.strategy": "cooperative-sticky"} | overrides
        consumer = Consumer(consumer_config(self.kafka, group, **overrides))
        try:
            wait = min(timeout, missing_after)
            partitions = {topic: topic_partitions(consumer, topic, wait) for topic in self.topics}
            if self._group_id is not None:
                consumer.subscribe(
                    self.topics, on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._revoked
                )
            else:
                tps = [TopicPartition(t, p, OFFSET_BEGINNING) for t, ps in partitions.items() for p in ps]
                for tp in tps:
                    self._pending[(tp.topic, tp.partition)] = None
                consumer.assign(tps)
        except BaseException:
            consumer.close()
            raise
        self._consumer = consumer
        self.problem = f"reading {self.name} to its end"
        self._check_caught_up()
        return self

    def pump(self, timeout: float = 0.0) -> int:
        """Apply what has arrived (waiting up to ``timeout`` for it); returns the records applied."""
        consumer = self._require()
        try:
            messages = consumer.consume(num_messages=self._batch, timeout=timeout)
        except KafkaException as exc:
            raise from_exception(exc, f"reading {self.name}") from exc
        count = 0
        for msg in good_messages(messages, self.name):
            try:
                self._apply(msg)
            except Exception as exc:  # one bad record must not stop the view
                log.error(
                    "%s: skipping record %s[%s]@%s: %s",
                    self.name,
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                    exc,
                )
            self.applied[(str(msg.topic()), int(msg.partition() or 0))] = int(msg.offset() or 0)
            count += 1
        self.records += count
        if self._pending:
            self._check_caught_up()
        return count

    def catch_up(self, timeout: float = 30.0) -> CompactedView:
        """Read every assigned partition up to its end offset as of now; raises on ``timeout``."""
        consumer = self._require()
        ends: dict[TP, int] = {}
        for tp in consumer.assignment():
            low, high = watermarks(consumer, TopicPartition(tp.topic, tp.partition), timeout)
            if high > low:
                ends[(tp.topic, tp.partition)] = high
        deadline = time.monotonic() + timeout
        while True:
            ends = {tp: end for tp, end in ends.items() if self.applied.get(tp, -1) + 1 < end}
            if ends:
                positions = consumer.position([TopicPartition(t, p) for t, p in ends])
                ends = {
                    (tp.topic, tp.partition): ends[(tp.topic, tp.partition)]
                    for tp in positions
                    if tp.offset < ends[(tp.topic, tp.partition)]
                }
            if not ends and not self._pending:
                return self
            if time.monotonic() > deadline:
                raise KafkaFault(f"timed out reading {self.name} ({len(ends)} partitions unread)")
            self.pump(0.2)

    def read_until(self, topic: str, partition: int, offset: int, timeout: float = 30.0) -> None:
        """Apply records until ``offset`` of the partition was applied (one's own write read back)."""
        deadline = time.monotonic() + timeout
        while self.applied.get((topic, partition), -1) < offset:
            if time.monotonic() > deadline:
                raise KafkaFault(f"timed out reading back {topic}[{partition}]@{offset}")
            self.pump(0.2)

    @classmethod
    def read(
        cls, kafka: KafkaSettings, topics: str | Sequence[str], timeout: float = 30.0, **options: Any
    ) -> CompactedView:
        """Read the topics to their current end once and close (CLI commands, history)."""
        view = cls(kafka, topics, **options)
        try:
            view.open(timeout).catch_up(timeout)
        finally:
            view.close()
        return view

    # --- group mode -------------------------------------------------------------------------------
    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            tp.offset = OFFSET_BEGINNING  # never committed: each owner replays its partitions
            self._pending[(tp.topic, tp.partition)] = None
        if partitions:
            self.ready.clear()
        consumer.incremental_assign(partitions)
        if self._on_assign is not None:
            self._on_assign([(tp.topic, tp.partition) for tp in partitions])

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = [(tp.topic, tp.partition) for tp in partitions]
        if self._on_revoke is not None:
            self._on_revoke(gone)
        for key in gone:
            self._pending.pop(key, None)
            self.applied.pop(key, None)
        if partitions:
            consumer.incremental_unassign(partitions)

    def partition_ready(self, topic: str, partition: int) -> bool:
        """This member owns the partition and has read it to the end seen when it was assigned."""
        consumer = self._require()
        owned = any(tp.topic == topic and tp.partition == partition for tp in consumer.assignment())
        return owned and (topic, partition) not in self._pending

    def owned(self) -> list[TP]:
        return [(tp.topic, tp.partition) for tp in self._require().assignment()]

    # --- caught up --------------------------------------------------------------------------------
    def _check_caught_up(self) -> None:
        consumer = self._require()
        for key, target in list(self._pending.items()):
            if target is None:
                try:
                    low, high = consumer.get_watermark_offsets(TopicPartition(*key), timeout=5, cached=False)
                except KafkaException as exc:
                    # A topic just created has no leader for a moment: retried on the next poll, quietly.
                    level = logging.DEBUG if exc.args[0].code() in _ELECTING else logging.WARNING
                    log.log(level, "%s: offsets of %s[%s]: %s", self.name, key[0], key[1], exc)
                    continue
                if high <= low:
                    del self._pending[key]
                    continue
                self._pending[key] = target = high
            position = consumer.position([TopicPartition(*key)])[0].offset
            if position >= 0 and position >= target:
                del self._pending[key]
        if not self._pending:
            self.problem = None
            self.ready.set()

    # --- following on a thread of its own ---------------------------------------------------------
    def start(self, retry_s: float = 1.0) -> CompactedView:
        """Follow the topics on a background thread; a missing topic is waited for (``problem`` says so)."""
        self._thread = threading.Thread(
            target=self._follow, args=(retry_s,), name=f"view-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def wait_ready(self, timeout: float) -> bool:
        return self.ready.wait(timeout)

    def _follow(self, retry_s: float) -> None:
        try:
            while not self._stop.is_set() and self._consumer is None:
                try:
                    self.open(timeout=10)  # a cold client needs a moment for metadata
                except KafkaFault as exc:
                    self.problem = str(exc)
                    self._stop.wait(retry_s)
            while not self._stop.is_set():
                self.pump(0.2)
        except Exception as exc:  # the view reports the problem; its users answer "unavailable"
            self.problem = f"following {self.name} failed: {exc}"
            log.exception("following %s failed", self.name)
        finally:
            self._close_consumer()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)

    def close(self) -> None:
        """Stop following (if started) and release the consumer."""
        if self._thread is not None:
            self.stop()
        else:
            self._close_consumer()

    def _close_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close()
            except (KafkaException, RuntimeError):
                pass

    def _require(self) -> Consumer:
        if self._consumer is None:
            raise KafkaFault(f"view {self.name} is not open", kind=Kind.PERMANENT)
        return self._consumer
