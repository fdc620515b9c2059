"""Per-partition contiguous completion: an offset is committed only when every record before it is done.

A record is done when its batch got a 2xx, or was acknowledged by the broker in the next retry topic (or
the DLQ), or was filtered out. Batches finish out of order (several requests in flight), so each partition
keeps a queue of (work unit, last offset) segments and commits up to the first unfinished one.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition

log = logging.getLogger(__name__)

TP = tuple[str, int]


@dataclass(eq=False)
class WorkUnit:
    """Something that finishes as a whole: a batch of events, or one parked retry batch."""

    done: bool = False
    partitions: set[TP] = field(default_factory=set)


class OffsetTracker:
    """Tracks the committable offset of every assigned partition."""

    def __init__(self) -> None:
        self._segments: dict[TP, deque[list[object]]] = {}
        self._committable: dict[TP, int] = {}
        self._dirty: set[TP] = set()

    def add(self, unit: WorkUnit, topic: str, partition: int, offset: int) -> None:
        """Record that ``offset`` of the partition belongs to ``unit`` (offsets arrive in order)."""
        tp = (topic, partition)
        queue = self._segments.get(tp)
        if queue is None:
            queue = self._segments[tp] = deque()
        elif queue:
            last = queue[-1]
            if last[0] is unit:
                last[1] = offset
                return
        queue.append([unit, offset])
        unit.partitions.add(tp)

    def complete(self, unit: WorkUnit) -> None:
        """Mark the unit done and advance every partition it touched."""
        unit.done = True
        for tp in unit.partitions:
            self._advance(tp)

    def _advance(self, tp: TP) -> None:
        queue = self._segments.get(tp)
        while queue and queue[0][0].done:  # type: ignore[attr-defined]
            _, offset = queue.popleft()
            self._committable[tp] = int(offset) + 1  # type: ignore[call-overload]
            self._dirty.add(tp)

    def pending(self) -> int:
        """Number of unfinished segments over all partitions (0 means everything seen is committable)."""
        return sum(len(q) for q in self._segments.values())

    def take_commits(self) -> list[TopicPartition]:
        """Offsets that advanced since the last call, ready for ``consumer.commit``."""
        out = [
            TopicPartition(t, p, self._committable[(t, p)])
            for t, p in self._dirty
            if (t, p) in self._committable
        ]
        self._dirty.clear()
        return out

    def commits_for(self, tps: list[TP]) -> list[TopicPartition]:
        """Committable offsets of some partitions (used when they are revoked)."""
        return [
            TopicPartition(t, p, self._committable[(t, p)]) for t, p in tps if (t, p) in self._committable
        ]

    def release(self, consumer: Consumer, tps: list[TP]) -> None:
        """Before partitions move to another sink: commit what is done, forget the rest (redelivered)."""
        commits = self.commits_for(tps)
        if commits:
            try:
                consumer.commit(offsets=commits, asynchronous=False)
            except Exception as exc:  # noqa: BLE001 - a lost commit only means duplicates
                log.warning("commit on revoke failed: %s", exc)
        self.forget(tps)

    def forget(self, tps: list[TP]) -> None:
        """Drop revoked partitions; units still in flight for them no longer move any offset."""
        for tp in tps:
            self._segments.pop(tp, None)
            self._committable.pop(tp, None)
            self._dirty.discard(tp)
