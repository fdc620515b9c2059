"""A confluent-kafka consumer polled from asyncio through its own thread.

Only the owning task calls it, between polls, so the client is never used from two threads at once;
rebalance callbacks run inside ``consume`` on the poll thread and are forwarded to the hooks given here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

log = logging.getLogger(__name__)
TP = tuple[str, int]


class PolledConsumer:
    """One consumer group member; ``on_revoke`` runs before partitions leave, for a final commit."""

    def __init__(
        self,
        config: dict[str, Any],
        topics: list[str],
        name: str,
        on_revoke: Callable[[Consumer, list[TP]], None] | None = None,
    ) -> None:
        self.client = Consumer(config)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._on_revoke = on_revoke
        self.assignment_changed = False
        self.client.subscribe(
            topics, on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._revoked
        )

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assignment_changed = True

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assignment_changed = True
        if self._on_revoke is not None:
            self._on_revoke(consumer, [(p.topic, p.partition) for p in partitions])

    async def consume(self, max_messages: int, timeout: float) -> list[Message]:
        """Up to ``max_messages`` records; consumer errors are logged and skipped (librdkafka retries)."""
        loop = asyncio.get_running_loop()
        messages = await loop.run_in_executor(self._executor, self._fetch, max_messages, timeout)
        good = []
        for msg in messages:
            err = msg.error()
            if err is None:
                good.append(msg)
            elif err.fatal():
                raise KafkaException(err)
            else:
                log.warning("consumer error on %s: %s", msg.topic(), err.str())
        return good

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
                log.warning("commit failed (will be redone): %s", exc)

    async def commit_sync(self, offsets: list[TopicPartition]) -> None:
        if offsets:
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(
                    self._executor, lambda: self.client.commit(offsets=offsets, asynchronous=False)
                )
            except KafkaException as exc:
                log.warning("final commit failed: %s", exc)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.client.close)
        self._executor.shutdown(wait=False)
