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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message

from inflow.config.settings import KafkaSettings
from inflow.kafka.clients import new_admin, topic_partitions
from inflow.kafka.errors import KafkaFault, Kind
from inflow.kafka.producer import KafkaProducer
from inflow.kafka.view import TP, CompactedView
from inflow.producers.s3_import.exceptions import InfrastructureFault, S3ImportError
from inflow.schemas.serde import AvroSerde

NO_LINGER: dict[str, Any] = {"linger.ms": 0}  # control records are written one at a time

log = logging.getLogger(__name__)
CLAIMED = "CLAIMED"
DONE = "DONE"
RevokeHook = Callable[[set[int]], None]
# The ledger group's timeouts: a dead poller's partitions move after 10 s; a file may take 10 min between
# two reads of the ledger (the importer reads it every few thousand rows, so this is only a safety net).
GROUP_SETTINGS: dict[str, Any] = {
    "session.timeout.ms": 10_000,
    "heartbeat.interval.ms": 1_000,
    "max.poll.interval.ms": 600_000,
}


def ledger_key(import_name: str, bucket: str, folder: str, file_name: str) -> str:
    """The file's identity, scoped to its import: like MoEngage, a file is known by its folder location and
    file name (a file re-uploaded under the same name is not imported again)."""
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


class Ledger:
    """This poller's view of the ledger partitions it owns, and the claims and outcomes it writes.

    The ledger is read through a :class:`CompactedView` in group mode: the group assigns partitions, the view
    replays each assigned partition from its beginning and says when it is read to its end
    (``partition_ready``); only then does this poller claim files of that partition.
    """

    def __init__(
        self, kafka: KafkaSettings, serde: AvroSerde, owner: str, group_id: str | None = None
    ) -> None:
        self.topic = kafka.topic("control.import-ledger")
        self.owner = owner
        self._serde = serde
        self._encode = serde.encoder("ImportLedgerEntry", topic=self.topic)
        self._group = group_id or f"{kafka.topic_prefix}.s3-import-pollers"
        self.partitions = len(topic_partitions(new_admin(kafka), self.topic))
        self._entries: dict[int, dict[str, dict[str, Any]]] = {}  # per assigned partition: key -> entry
        self._revoke_hooks: list[RevokeHook] = []
        self._producer = KafkaProducer(kafka, name="import-ledger", **NO_LINGER)
        self._view = CompactedView(
            kafka,
            self.topic,
            apply=self._apply,
            name="import-ledger",
            group_id=self._group,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            **GROUP_SETTINGS,
        )
        try:
            self._view.open()
        except BaseException:
            self._producer.close()
            raise

    # --- group membership -------------------------------------------------------------------------
    def _on_assign(self, partitions: list[TP]) -> None:
        for _, p in partitions:
            self._entries[p] = {}  # the view replays the partition from its beginning
        log.info("ledger partitions assigned: %s", sorted(p for _, p in partitions))

    def _on_revoke(self, partitions: list[TP]) -> None:
        lost = {p for _, p in partitions}
        for hook in list(self._revoke_hooks):
            hook(lost)  # the importer flushes its rows and checkpoints before the partition moves
        for p in lost:
            self._entries.pop(p, None)
        log.info("ledger partitions revoked: %s", sorted(lost))

    def add_revoke_hook(self, hook: RevokeHook) -> None:
        self._revoke_hooks.append(hook)

    def remove_revoke_hook(self, hook: RevokeHook) -> None:
        self._revoke_hooks.remove(hook)

    # --- reading ----------------------------------------------------------------------------------
    def pump(self, timeout: float = 0.0) -> None:
        """Serve group callbacks and apply ledger records; the view marks partitions read to their end."""
        self._view.pump(timeout)

    def _apply(self, msg: Message) -> None:
        entries = self._entries.get(msg.partition() or 0)
        value, raw_key = msg.value(), msg.key()
        if entries is None or value is None:
            return
        _, entry = self._serde.decode(value, expected="ImportLedgerEntry")
        entries[raw_key.decode() if raw_key else ""] = entry

    def owned_partitions(self) -> set[int]:
        return {p for p in self._entries if self._view.partition_ready(self.topic, p)}

    def assigned_partitions(self) -> set[int]:
        return set(self._entries)

    def owns(self, key: str) -> bool:
        p = partition_for(key, self.partitions)
        return p in self._entries and self._view.partition_ready(self.topic, p)

    def get(self, key: str) -> dict[str, Any] | None:
        entries = self._entries.get(partition_for(key, self.partitions))
        return None if entries is None else entries.get(key)

    def decide(self, key: str, max_attempts: int) -> Decision:
        """As in MoEngage, a file already encountered is skipped whatever its outcome, unless retries are
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
        try:
            self._producer.produce(self.topic, self._encode(entry), key.encode(), partition=partition)
            self._producer.flush(30)
        except KafkaFault as exc:
            if exc.kind is Kind.FATAL:
                raise
            if exc.kind is Kind.RETRIABLE:
                raise InfrastructureFault(
                    f"Kafka unavailable: ledger write failed: {exc}", kafka=True
                ) from exc
            raise S3ImportError(f"ledger write for {key} failed: {exc}") from exc
        entries = self._entries.get(partition)
        if entries is not None:
            entries[key] = entry

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
        self._view.close()
        self._producer.close(10)
