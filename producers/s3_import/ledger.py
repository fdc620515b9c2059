"""The processed-file ledger: a compacted topic keyed by (import, folder, file) that decides, across
restarts and across several pollers, that a file is imported once whatever its outcome.

How exactly one poller processes a file: every ledger key is hashed (CRC-32) to a fixed ledger partition,
and the pollers form one Kafka consumer group on the ledger topic (cooperative-sticky assignment). A poller
only imports files whose ledger partition is assigned to it, and only after it has read that partition to
its end, so it knows every earlier claim and outcome. Kafka's group protocol guarantees a partition has one
owner at a time; a poller that loses a partition learns it in the revoke callback, where it flushes the rows
in flight and writes a checkpoint before the partition moves, so the next owner resumes exactly there. A
poller that dies without a callback (kill -9) loses its partitions after the session timeout; the next
owner resumes from the last checkpoint and may re-send the rows after it, with the same deterministic
``event_uuid``, which downstream de-duplication absorbs. Scale-out is by adding pollers, up to the number
of ledger partitions.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from inflow.config.settings import KafkaSettings
from inflow.producers.s3_import.control_topics import topic_partitions
from inflow.producers.s3_import.exceptions import S3ImportError
from inflow.schemas.serde import AvroSerde

log = logging.getLogger(__name__)
CLAIMED = "CLAIMED"
DONE = "DONE"
RevokeHook = Callable[[set[int]], None]


def ledger_key(import_name: str, bucket: str, folder: str, file_name: str) -> str:
    """The file's identity (reference 4.2: folder location and file name), scoped to its import."""
    return f"{import_name}|{bucket}/{folder}|{file_name}"


def partition_for(key: str, partitions: int) -> int:
    """Stable partition of a ledger key; independent of the client's default partitioner."""
    return zlib.crc32(key.encode()) % partitions


@dataclass
class Decision:
    """What to do with a file: import it (from which row, which attempt) or skip it, and why."""

    process: bool
    reason: str
    attempt: int = 1
    resume_after: int = 0
    entry: dict[str, Any] | None = None


@dataclass
class _PartitionState:
    ready: bool = False
    target: int | None = None
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)


class Ledger:
    """This poller's view of the ledger partitions it owns, and the claims and outcomes it writes."""

    def __init__(
        self, kafka: KafkaSettings, serde: AvroSerde, owner: str, group_id: str | None = None
    ) -> None:
        self.topic = kafka.topic("control.import-ledger")
        self.owner = owner
        self._serde = serde
        self._encode = serde.encoder("ImportLedgerEntry", topic=self.topic)
        self._group = group_id or f"{kafka.topic_prefix}.s3-import-pollers"
        self._consumer = Consumer(
            kafka.consumer_config(
                self._group,
                **{
                    "partition.assignment.strategy": "cooperative-sticky",
                    "session.timeout.ms": 10_000,
                    "heartbeat.interval.ms": 1_000,
                    "max.poll.interval.ms": 600_000,
                },
            )
        )
        self._producer = Producer(kafka.producer_config(**{"linger.ms": 0}))
        self.partitions = len(topic_partitions(self._consumer, self.topic))
        self._states: dict[int, _PartitionState] = {}
        self._revoke_hooks: list[RevokeHook] = []
        self._consumer.subscribe(
            [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )

    # --- group membership -------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._states[tp.partition] = _PartitionState()
            tp.offset = OFFSET_BEGINNING  # never committed: each owner replays its partitions
        consumer.incremental_assign(partitions)
        log.info("ledger partitions assigned: %s", sorted(tp.partition for tp in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {tp.partition for tp in partitions}
        for hook in list(self._revoke_hooks):
            hook(lost)  # the importer flushes its rows and checkpoints before the partition moves
        for p in lost:
            self._states.pop(p, None)
        if partitions:
            consumer.incremental_unassign(partitions)
        log.info("ledger partitions revoked: %s", sorted(lost))

    def add_revoke_hook(self, hook: RevokeHook) -> None:
        self._revoke_hooks.append(hook)

    def remove_revoke_hook(self, hook: RevokeHook) -> None:
        self._revoke_hooks.remove(hook)

    # --- reading ----------------------------------------------------------------------------------
    def pump(self, timeout: float = 0.0) -> None:
        """Serve group callbacks and apply ledger records; marks partitions ready once read to the end."""
        msgs = self._consumer.consume(num_messages=500, timeout=timeout)
        for msg in msgs:
            if msg.error():
                log.warning("ledger consumer: %s", msg.error())
                continue
            state = self._states.get(msg.partition() or 0)
            value, raw_key = msg.value(), msg.key()
            if state is None or value is None:
                continue
            _, entry = self._serde.decode(value, expected="ImportLedgerEntry")
            key = raw_key.decode() if raw_key else ""
            state.entries[key] = entry
        self._check_ready()

    def _check_ready(self) -> None:
        for p, state in self._states.items():
            if state.ready:
                continue
            tp = TopicPartition(self.topic, p)
            try:
                if state.target is None:
                    low, high = self._consumer.get_watermark_offsets(tp, timeout=5, cached=False)
                    state.target = high
                    if high <= low:
                        state.ready = True
                        continue
                position = self._consumer.position([tp])[0].offset
            except KafkaException as exc:
                log.warning("ledger partition %s: %s", p, exc)
                continue
            if position >= 0 and position >= state.target:
                state.ready = True

    def owned_partitions(self) -> set[int]:
        return {p for p, s in self._states.items() if s.ready}

    def assigned_partitions(self) -> set[int]:
        return set(self._states)

    def owns(self, key: str) -> bool:
        state = self._states.get(partition_for(key, self.partitions))
        return state is not None and state.ready

    def get(self, key: str) -> dict[str, Any] | None:
        state = self._states.get(partition_for(key, self.partitions))
        return None if state is None else state.entries.get(key)

    def decide(self, key: str, max_attempts: int) -> Decision:
        """Reference 4.2: a file already encountered is skipped whatever its outcome, unless retries are
        configured and it FAILED; a CLAIMED file belongs to a dead or departed owner and is resumed."""
        entry = self.get(key)
        if entry is None:
            return Decision(True, "new file")
        attempts = int(entry.get("attempts") or 1)
        if entry["state"] == CLAIMED:
            return Decision(
                True,
                f"resuming after row {entry.get('rows_acked', 0)} (claimed by {entry['owner']})",
                attempts,
                int(entry.get("rows_acked") or 0),
                entry,
            )
        if entry.get("status") == "FAILED" and attempts < max_attempts:
            return Decision(
                True, f"retrying failed file (attempt {attempts + 1} of {max_attempts})", attempts + 1
            )
        return Decision(False, f"already processed ({entry.get('status')})", attempts, entry=entry)

    # --- writing ----------------------------------------------------------------------------------
    def write(self, key: str, entry: dict[str, Any]) -> None:
        """Write an entry to the key's partition and wait for the broker's acknowledgement."""
        partition = partition_for(key, self.partitions)
        errors: list[Any] = []
        self._producer.produce(
            self.topic,
            self._encode(entry),
            key.encode(),
            partition=partition,
            on_delivery=lambda err, _msg: errors.append(err) if err else None,
        )
        if self._producer.flush(30) or errors:
            raise S3ImportError(f"ledger write for {key} failed: {errors or 'not acknowledged within 30 s'}")
        state = self._states.get(partition)
        if state is not None:
            state.entries[key] = entry

    def entry(
        self,
        *,
        import_name: str,
        folder: str,
        file_name: str,
        state: str,
        run_id: str,
        claimed_at: datetime,
        status: str | None = None,
        etag: str | None = None,
        rows_acked: int = 0,
        attempts: int = 1,
    ) -> dict[str, Any]:
        return {
            "import_name": import_name,
            "folder": folder,
            "file_name": file_name,
            "state": state,
            "owner": self.owner,
            "run_id": run_id,
            "claimed_at": claimed_at,
            "updated_at": datetime.now(UTC),
            "status": status,
            "etag": etag,
            "rows_acked": rows_acked,
            "attempts": attempts,
        }

    def close(self) -> None:
        """Leave the group (partitions move to the other pollers at once) and flush."""
        self._producer.flush(10)
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("closing ledger consumer: %s", exc)
