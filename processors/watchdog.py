"""Notices a lane partition that has records waiting but gets nothing delivered, so the worker re-reads it.

On a loaded machine, faust (over aiokafka) sometimes comes out of a rebalance that followed its start-up
recovery with a lane partition assigned, flow active, nothing paused, and no record of it ever delivered
to the lane agent again until the next rebalance (seen in the two-worker test about 1 run in 8 with three
copies running at once; the progress log line shows it). The watchdog compares, for each lane partition
this worker owns, the group's committed offset with the partition's end: records beyond the committed
offset and no batch applied from the partition for ``stall_s`` while the lane agent is idle mean a stall,
and the worker seeks the partition back to the committed offset. The same covers a commit held back by a
record that was skipped and never re-read. Re-reading is safe: records already applied are applied again
(same position, idempotent) and their outputs carry the same event_uuid.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, TopicPartition


class LaneWatchdog:
    """Per owned lane partition: when a batch was last applied; which partitions stalled."""

    def __init__(
        self,
        consumer_config: dict[str, Any],
        topic: str,
        stall_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # The worker group's id, never subscribed: only committed offsets and watermarks are asked.
        self._client = Consumer(consumer_config)
        self.topic = topic
        self.stall_s = stall_s
        self.clock = clock
        self.progress: dict[int, float] = {}

    def assigned(self, partitions: Iterable[int]) -> None:
        now = self.clock()
        self.progress = {partition: now for partition in partitions}

    def applied(self, partition: int) -> None:
        self.progress[partition] = self.clock()

    def stalled(self, owned: Iterable[int], idle: bool) -> dict[int, int]:
        """Blocking (run it off the event loop). Owned partitions with records beyond the committed offset
        and nothing applied for ``stall_s`` while the agent is ``idle``: partition -> offset to re-read from.
        A partition looked at waits another ``stall_s`` before the next look."""
        if not idle:
            return {}
        now = self.clock()
        due = [p for p in owned if now - self.progress.setdefault(p, now) >= self.stall_s]
        if not due:
            return {}
        stalled: dict[int, int] = {}
        for tp in self._client.committed([TopicPartition(self.topic, p) for p in due], timeout=10):
            low, high = self._client.get_watermark_offsets(
                TopicPartition(self.topic, tp.partition), timeout=10, cached=False
            )
            start = tp.offset if tp.offset >= 0 else low
            if high > start:
                stalled[tp.partition] = start
            self.progress[tp.partition] = now
        return stalled

    def close(self) -> None:
        self._client.close()
