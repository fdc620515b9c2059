"""The batch consumer loop: poll a batch, decode it, hand it over, commit only after it was processed.

A confluent-kafka consumer is polled from asyncio through one thread of its own, so the client is never
used from two threads at once; rebalance callbacks run inside the poll on that thread and are forwarded
to the ``on_assign`` / ``on_revoke`` hooks (``on_revoke`` is where a component commits what it finished
before a partition moves). Errors are classified once: a fatal one stops the loop with a typed error,
anything else is logged and librdkafka retries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from inflow.config.settings import KafkaSettings
from inflow.kafka.clients import consumer_config
from inflow.kafka.errors import Kind, classify, fault

log = logging.getLogger(__name__)
TP = tuple[str, int]
RebalanceHook = Callable[[Consumer, list[TP]], None]


# A fetch is answered when it holds 64 KB or after 100 ms (librdkafka: 1 byte, 500 ms): under load the broker
# answers fewer, fuller fetches (less CPU on both sides), idle it adds at most 100 ms per hop.
BATCH_FETCH: dict[str, Any] = {"fetch.min.bytes": 65_536, "fetch.wait.max.ms": 100}


class BatchConsumer:
    """One consumer-group member read in batches from asyncio."""

    def __init__(
        self,
        kafka: KafkaSettings,
        group_id: str,
        topics: Sequence[str],
        *,
        name: str = "consumer",
        on_assign: RebalanceHook | None = None,
        on_revoke: RebalanceHook | None = None,
        **overrides: Any,
    ) -> None:
        self.client = Consumer(consumer_config(kafka, group_id, **(BATCH_FETCH | overrides)))
        self.name = name
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self.assignment_changed = False
        self.client.subscribe(
            list(topics), on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._revoked
        )

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assignment_changed = True
        if self._on_assign is not None:
            self._on_assign(consumer, [(p.topic, p.partition) for p in partitions])

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assignment_changed = True
        if self._on_revoke is not None:
            self._on_revoke(consumer, [(p.topic, p.partition) for p in partitions])

    async def consume(self, max_messages: int, timeout: float) -> list[Message]:
        """Up to ``max_messages`` records; a fatal consumer error raises, others are logged and skipped."""
        loop = asyncio.get_running_loop()
        messages = await loop.run_in_executor(self._executor, self._fetch, max_messages, timeout)
        return good_messages(messages, self.name)

    def _fetch(self, max_messages: int, timeout: float) -> list[Message]:
        """What is queued now; else wait up to ``timeout`` for one record, then take what else is queued.

        ``consume(n, timeout)`` alone would wait for all n records, delaying a trickle by the whole timeout.
        """
        ready = self.client.consume(max_messages, 0)
        if ready:
            return list(ready)
        first = self.client.poll(timeout)
        if first is None:
            return []
        return [first, *self.client.consume(max_messages - 1, 0)] if max_messages > 1 else [first]

    def assignment(self) -> list[TopicPartition]:
        return list(self.client.assignment())

    def commit(self, offsets: list[TopicPartition]) -> None:
        """Asynchronous commit of offsets that are safe; a lost commit only means duplicates later."""
        if offsets:
            try:
                self.client.commit(offsets=offsets, asynchronous=True)
            except KafkaException as exc:
                log.warning("%s: commit failed (will be redone): %s", self.name, exc)

    async def commit_sync(self, offsets: list[TopicPartition]) -> None:
        if offsets:
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(
                    self._executor, lambda: self.client.commit(offsets=offsets, asynchronous=False)
                )
            except KafkaException as exc:
                log.warning("%s: final commit failed: %s", self.name, exc)

    async def run(
        self,
        handle: Callable[[list[Message]], Awaitable[None]],
        *,
        max_messages: int = 500,
        timeout: float = 0.5,
        running: Callable[[], bool] = lambda: True,
    ) -> None:
        """The loop: consume a batch, ``await handle(batch)``, then commit the batch's next offsets.

        A batch whose handler raises is not committed, so it is read again after a restart or rebalance
        (at-least-once)."""
        while running():
            batch = await self.consume(max_messages, timeout)
            if not batch:
                continue
            await handle(batch)
            self.commit(next_offsets(batch))

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.client.close)
        self._executor.shutdown(wait=False)


def good_messages(messages: Sequence[Message], name: str) -> list[Message]:
    """The records of a consumed batch; a fatal error raises a typed error, others are logged and dropped
    (librdkafka retries transient errors by itself)."""
    good = []
    for msg in messages:
        err = msg.error()
        if err is None:
            good.append(msg)
        elif classify(err) is Kind.FATAL:
            raise fault(err, f"{name} cannot go on")
        else:
            log.warning("%s: consumer error on %s: %s", name, msg.topic(), err.str())
    return good


def next_offsets(batch: Sequence[Message]) -> list[TopicPartition]:
    """The offsets to commit after ``batch`` was processed: one past the last record of each partition."""
    last: dict[TP, int] = {}
    for msg in batch:
        key = (str(msg.topic()), int(msg.partition() or 0))
        offset = int(msg.offset() or 0)
        if offset >= last.get(key, -1):
            last[key] = offset
    return [TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in last.items()]
