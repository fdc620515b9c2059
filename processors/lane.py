"""The lane stage: applies ``ingest.records`` to the identity state of the partitions this worker owns.

Consistency across partitions and workers: ``ingest.records`` is keyed by workspace and identifier value
(:mod:`~inflow.processors.routing`), so everything one request or row says about one user is in one
partition, in the order it was written, and the consumer group (``<prefix>.processors``) gives that
partition, with the co-partitioned changelog partitions of every state table, to exactly one worker. What a
record needs from another partition travels as a protocol message on the same topic
(:mod:`~inflow.processors.protocol`, ``docs/IDENTITY.md``); growing the topic moves state with
:mod:`~inflow.processors.growth`.

Built on the package's Kafka layer (a :class:`~inflow.kafka.consumer.BatchConsumer`, a
:class:`~inflow.kafka.producer.KafkaProducer`) and on RocksDB through ``rocksdict``, not on faust-streaming:
faust offers no public way to write a table's changelog once per batch instead of once per write, to reach
a partition's RocksDB database directly, to tell a table how far its changelog is applied, or to learn which
partitions its consumer paused, and the faust worker stalled after some rebalances. Owning the loop makes
each of these a plain step:

- A partition assigned to this worker (cooperative rebalancing: only moved partitions are revoked and
  assigned) is paused at once, its databases opened and brought up to the end of its changelogs
  (:class:`~inflow.processors.changelog.ChangelogRestorer`, a few thousand records per step between lane
  batches, so the group keeps hearing from this member); then it is resumed from its committed offset.
- A batch: each partition's records are applied in order by
  :class:`~inflow.processors.engine.LaneProcessor`, its outputs queued, its state writes coalesced into
  one changelog record per changed key; the outputs are flushed, then the changelog records are sent and
  flushed (no state change reaches a changelog before the outputs it goes with); then the writes go to
  RocksDB together with the changelog offsets they reach; then the batch's offsets are committed (see
  :meth:`LaneAgent.handle` for what a crash at each step leaves). So nothing is committed before what
  it caused is on the broker (at-least-once, effectively once per event_uuid: a replayed
  record is applied again at the same position and its outputs carry the same event_uuid).
- A record whose profile, event or stored value would be over a topic's size limit is rejected with the
  reason (its state changes dropped) instead of stopping the worker.
- A revoked partition's databases are closed; records fetched for a partition no longer owned are not
  applied (its new owner reads them again from the committed offset).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from inflow.config.settings import KafkaSettings
from inflow.kafka.clients import topic_partitions
from inflow.kafka.consumer import BatchConsumer, next_offsets
from inflow.kafka.errors import RecordTooLarge
from inflow.kafka.producer import KafkaProducer
from inflow.observability import worker_metrics as wm
from inflow.processors import backfill, bundles, growth, jsoncodec, protocol
from inflow.processors.backfill import Backfill
from inflow.processors.changelog import ChangelogRestorer
from inflow.processors.collection import Collector
from inflow.processors.engine import LaneProcessor
from inflow.processors.exceptions import LaneFramingError, Rejection
from inflow.processors.lanes import OWNED_LOG
from inflow.processors.outputs import EVENTS, OUTCOMES, PROFILES, REJECTED, Output
from inflow.processors.publishing import Encoded, Publisher
from inflow.processors.reading import IngestReader
from inflow.processors.settings import WorkerSettings
from inflow.processors.state import State
from inflow.processors.store import SEEN, TABLES, LaneStores
from inflow.schemas.exceptions import SerdeError
from inflow.schemas.packs import PACK_RECORD
from inflow.schemas.serde import AvroSerde

log = logging.getLogger(__name__)
TP = tuple[str, int]
RESTORE_STEP_S = 0.5
MAX_SEEN_VALUE = 64  # a seen mark's value: its position [partition, offset, index] as JSON
EVENT_RECORD = "EventRecord"


class LaneAgent:
    """One member of the lane consumer group with the RocksDB state of the partitions it owns."""

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: WorkerSettings,
        group_id: str,
        lanes_topic: str,
        changelogs: list[str],
        processor: LaneProcessor,
        stores: LaneStores,
        restorer: ChangelogRestorer,
        publisher: Publisher,
        serde: AvroSerde,
        layout: growth.LayoutOf = lambda: None,
        metadata: Any = None,
        layout_topic: str | None = None,
        changelog_producer: KafkaProducer | None = None,
    ) -> None:
        """``layout()``: the latest ``control.layout`` record of ``ingest.records`` (None: never grown);
        ``metadata``: a client to read the topic's partition count from; ``changelog_producer``: the
        producer of the changelogs and layout records, whose acknowledged offsets are followed (default:
        the publisher's, which must then report successes)."""
        self.kafka = kafka
        self.settings = settings
        self.group_id = group_id
        self.lanes_topic = lanes_topic
        self.changelogs = changelogs
        self.processor = processor
        self.state: State = processor.state
        self.stores = stores
        self.restorer = restorer
        self.publisher = publisher
        # Outputs go through the publisher's producer, state (changelogs, layout) through this one: its
        # deliveries are followed one by one, the outputs' only for failures (see KafkaProducer).
        # (not ``changelog_producer or ...``: a KafkaProducer with nothing queued has len() 0)
        self.producer = publisher.producer if changelog_producer is None else changelog_producer
        self._mark_room: int | None = None  # the longest seen-mark key (see _seen_room), once known
        self._run_room: tuple[str, int, int] | None = None  # see _run_limits
        self.serde = serde
        self.reader = IngestReader(serde)  # timestamps as epoch ms (the engine's unit), no datetimes
        self.owned: set[int] = set()  # lane partitions assigned to this worker
        self.ready: set[int] = set()  # ... whose state is restored: their records are applied
        self._opening: set[int] = set()  # ... whose databases are not open yet
        self._recount = False  # a rebalance happened: read the partition count again (did the topic grow?)
        self._rewind: dict[int, int] = {}  # a partition's records fetched while it restored: re-read from
        self._persisted: dict[tuple[int, int], int] = {}  # (table, partition) -> changelog offset acked
        self.applied: dict[int, int] = {}  # lane partition -> lane messages applied, for the progress log
        self.layout = layout
        self.metadata = metadata
        self.partitions = 0  # of ingest.records, read when partitions are assigned
        self._deferred: dict[int, list[Message]] = {}  # records read while a partition waits for a growth
        self.layout_topic = layout_topic  # where a partition complete in the current layout is announced
        self._check: set[int] = set()  # partitions to check against the layout even without records
        self._announced: dict[int, int] = {}  # partition -> partition count announced complete
        self.heartbeat: Callable[[], None] = lambda: None  # /health: the loop turns
        self.counts = Counts()
        self.backfill: Backfill | None = None  # identifier backfills, stepped between batches
        self.stage = "starting"
        self._restore_thread = ThreadPoolExecutor(1, thread_name_prefix="restore")

    # --- the loop ---------------------------------------------------------------------------------
    async def run(self, running: Callable[[], bool]) -> None:
        """While ``running()``: restore what was assigned, then consume, apply, flush, persist, commit."""
        consumer = BatchConsumer(
            self.kafka,
            self.group_id,
            [self.lanes_topic],
            name="lanes",
            on_assign=self._assigned,
            on_revoke=self._revoked,
            **{  # type: ignore[arg-type]
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": int(self.settings.session_timeout_s * 1000),
                "max.partition.fetch.bytes": self.settings.max_fetch_bytes,
                # A grown topic is noticed (and its new partitions assigned) within seconds.
                "topic.metadata.refresh.interval.ms": 5000,
            },
        )
        collector = Collector(full_every_s=self.settings.gc_full_every_s)
        try:
            with collector:
                await self._loop(running, consumer, collector)
        finally:
            self.stage = "closing"
            await consumer.close()  # revokes: the partitions' databases are closed
            self.restorer.close()
            self.stores.close_all()
            self._restore_thread.shutdown(wait=False)

    async def _loop(self, running: Callable[[], bool], consumer: BatchConsumer, collector: Collector) -> None:
        """The worker's loop: restore steps, batches, and the garbage collection due between them."""
        loop = asyncio.get_running_loop()
        while running():
            collector.between_batches()
            self.heartbeat()
            if self._opening or self._recount:
                await loop.run_in_executor(self._restore_thread, self._open_assigned)
            if self.restorer.restoring:
                self.stage = "restoring"
                step = self.restorer.step
                done = await loop.run_in_executor(self._restore_thread, step, RESTORE_STEP_S)
                for partition in done:
                    self._resume(consumer.client, partition)
            self.stage = "waiting for a batch"
            busy = self.restorer.restoring or self._opening
            backfilling = self.backfill is not None and bool(self.backfill.due(self.ready))
            wait = 0.0 if busy or backfilling else self.settings.batch_within_s
            batch = await consumer.consume(self.settings.lane_batch_packs, wait)
            if batch or self._check & self.ready or backfilling:
                self.stage = "applying"
                await self.handle(consumer, batch)

    async def handle(self, consumer: BatchConsumer, batch: list[Message]) -> None:
        """Apply a batch per lane partition: outputs, flush; changelog records, flush; state, offsets.

        Where a crash (kill -9, a broker fault, a record the broker refuses) can strike, and why nothing is
        lost there (a step cannot be reached before the one above it is acknowledged):

        1. While applying: nothing of the batch left the process; the restart reads the batch again from
           the committed offset over state that does not know it.
        2. During the outputs' flush: some outputs may be on the broker, no changelog record of the batch
           is. The replay applies the batch again over the old state and publishes every output again
           (the same event_uuid: duplicates, removed downstream, never a gap).
        3. During the changelog flush: every output is on the broker; some state changes may be, and
           the changelogs are five topics, so one table can have the batch's writes and another not.
           The replay applies the batch again at the same lane positions (its seen marks store them, so
           a record is not taken for its own duplicate) and publishes the outputs once more; an event
           whose user the identity index knows but whose profile did not reach the changelog makes the
           profile again under that uid instead of being rejected (``LaneProcessor._event``).
        4. After both flushes, before the RocksDB write or the commit: the restore reads the batch's
           changelog records (a database is rewritten only with the changelog offset it reaches, so it
           never claims more than it holds), then the batch is applied again as in 3.

        When outputs and changelog records shared one flush, a crash in it could leave a merge in the
        changelog and its MOE_USER_MERGED event nowhere: the replay found the users already merged and
        had nothing to publish. The faust worker before this stage committed lane offsets on a timer,
        whatever its producer had delivered: a profile the broker refused with MSG_SIZE_TOO_LARGE failed
        the producer batch it travelled in, the worker died, and records committed behind it were never
        written. Here a record over a size limit is refused before it is queued (the ingest record that
        caused it is rejected, see :meth:`_too_large`), and offsets are committed only after both
        flushes succeeded.
        """
        started = time.monotonic()
        applied: list[Message] = []
        changes: list[tuple[int, list[list[tuple[bytes, bytes | None]]]]] = []
        groups = _by_partition(batch)
        for partition in sorted(self._check & self.ready):  # a growth to apply, records or not
            groups.setdefault(partition, [])
        self._check -= self.ready
        for partition, messages in groups.items():
            if partition not in self.ready:
                if partition in self.owned:  # fetched before its pause took hold: read again when ready
                    first = int(messages[0].offset() or 0)
                    self._rewind[partition] = min(self._rewind.get(partition, first), first)
                continue
            changes.append((partition, self.apply_partition(partition, messages)))
            applied += messages
        changes += self._backfill_steps()
        try:
            self.stage = "flushing outputs"
            await self.publisher.producer.flush_patiently_async(self.settings.flush_timeout_s)
            for partition, writes in changes:
                self.send_changelog(partition, writes)
            self.stage = "flushing changelogs"
            await self.producer.flush_patiently_async(self.settings.flush_timeout_s)
        except BaseException:
            self.stores.discard()
            self.state.drop_batch()
            self.state.clear_cache()
            self._persisted.clear()
            raise
        self.stores.persist(self._persisted)
        self._persisted.clear()
        offsets = [
            tp if tp.partition not in self._deferred else TopicPartition(tp.topic, tp.partition, first)
            for tp in next_offsets(applied)
            for first in [self._first_deferred(tp.partition)]
        ]
        await consumer.commit_sync(offsets)
        self.counts.publish(self.lanes_topic, time.monotonic() - started, len(self.restorer.restoring))
        if self.processor.fair_usage is not None:
            for workspace, n in self.processor.fair_usage.take_imposed().items():
                wm.FAIR_USAGE_BLOCKS.labels(workspace).inc(n)

    def _backfill_steps(self) -> list[tuple[int, list[list[tuple[bytes, bytes | None]]]]]:
        """One bounded identifier-backfill step per partition that has one due (``processors.backfill``):
        its outputs queued with the batch's, its state writes (the scan's progress included) committed
        with them. Not on a partition that waits for a growth."""
        if self.backfill is None:
            return []
        changes = []
        for partition in self.backfill.due(sorted(self.ready)):
            if partition in self._deferred:
                continue
            self.stores.use(partition)
            if growth.waiting(self.state, partition):
                continue
            self.processor.at(partition, self.partitions)
            outputs = self.backfill.step(partition)
            self._publish(partition, -1, "backfill", None, [partition, -1, 0], outputs)
            changes.append((partition, self.state.commit()))
        return changes

    def _first_deferred(self, partition: int) -> int:
        waiting = self._deferred.get(partition)
        return int(waiting[0].offset() or 0) if waiting else -1

    def apply_partition(
        self, partition: int, messages: list[Message]
    ) -> list[list[tuple[bytes, bytes | None]]]:
        """Apply a partition's records (outputs queued); per table, the state writes for its changelog."""
        self.applied[partition] = self.applied.get(partition, 0) + len(messages)
        self.stores.use(partition)  # RocksDB reads and writes go to this partition's databases
        self.processor.at(partition, self.partitions)
        moves = growth.check_layout(self.state, partition, self.partitions, self.layout())
        if moves:
            log.info(
                "partition %d: moving its state to the layout of %d partitions (%d messages)",
                partition,
                self.partitions,
                len(moves),
            )
        for output in moves:
            self.publisher.send(output)
        self.state.stage()
        for msg in messages:
            if partition in self._deferred or growth.waiting(self.state, partition):
                if not _is_growth_message(msg.value()):
                    self._deferred.setdefault(partition, []).append(msg)
                    continue
            if self.apply_message(partition, msg):  # the growth's last MARK: apply what waited
                for waited in self._deferred.pop(partition, []):
                    self.apply_message(partition, waited)
        self._announce(partition)
        return self.state.commit()

    def _announce(self, partition: int) -> None:
        """Tell ``inflow topics grow`` (and operators) that this partition's state is complete in the
        current layout: ``control.layout`` key ``<topic>#<partition>``."""
        current = growth.meta(self.state, partition)
        if self.layout_topic is None or current is None or self._announced.get(partition) == self.partitions:
            return
        if current["n"] != self.partitions or current.get("await") is not None:
            return
        value = jsoncodec.dumps_bytes({"partitions": self.partitions, "at": int(time.time() * 1000)})
        self.producer.produce(self.layout_topic, value, f"{self.lanes_topic}#{partition}".encode())
        self._announced[partition] = self.partitions

    def send_changelog(self, partition: int, tables: list[list[tuple[bytes, bytes | None]]]) -> None:
        """Queue a partition's state writes to the changelogs (each was size-checked with its record)."""
        for index, writes in enumerate(tables):
            if not writes:
                continue
            topic = self.changelogs[index]
            if index == SEEN:  # one mark per applied record: a few bundles instead of a record each
                room = self.producer.limit(topic) - bundles.KEY_ROOM
                writes = [
                    (bundles.bundle_key(partition, n), b) for n, b in enumerate(bundles.chunks(writes, room))
                ]
            for key, raw in writes[:-1]:
                self.producer.produce(topic, raw, key, partition=partition)
            # One partition, one idempotent producer: the last write's offset is the highest.
            key, raw = writes[-1]
            self.producer.produce(
                topic,
                raw,
                key,
                partition=partition,
                on_delivered=self._acked_for(index),
            )

    def _acked_for(self, index: int) -> Callable[[Message], None]:
        """Records the changelog offset the broker acknowledged for table ``index``."""

        def acked(msg: Message) -> None:
            key = (index, int(msg.partition() or 0))
            self._persisted[key] = max(self._persisted.get(key, -1), int(msg.offset() or 0))

        return acked

    def apply_message(self, partition: int, msg: Message) -> bool:
        """Apply one message; True when it was the MARK that ends this partition's wait for a growth."""
        offset = int(msg.offset() or 0)
        data = msg.value() or b""
        position = [partition, offset, 0]
        if not protocol.is_protocol(data):
            self._apply_record(partition, offset, data, position, None)
            return False
        try:
            message = protocol.decode(data)
        except LaneFramingError as exc:
            self.publisher.unreadable(self.lanes_topic, partition, offset, data, str(exc))
            return False
        if message.kind == protocol.FORWARD:
            self._apply_record(partition, offset, message.payload, position, message.header.get("slot"))
            return False
        if message.kind == protocol.MOVE:
            if growth.on_move(self.state, partition, message.header, message.payload):
                backfill.scan_again(self.state, partition)
            self.state.stage()
            return False
        if message.kind == protocol.MARK:
            done = growth.on_mark(self.state, partition, message.header)
            self.state.stage()
            if done:
                log.info("partition %d: state of the new layout complete, applying", partition)
            return done
        try:
            outputs = self.processor.on_message(message)
        except Rejection as exc:
            self.state.discard()
            self.publisher.unreadable(self.lanes_topic, partition, offset, data, exc.reason)
            return False
        self._publish(partition, offset, "protocol", None, position, outputs)
        return False

    def _apply_record(
        self, partition: int, offset: int, data: bytes, position: list[int], slot: str | None
    ) -> None:
        try:
            record_name, record = self.reader.decode(data)
        except SerdeError as exc:
            self.publisher.unreadable(self.lanes_topic, partition, offset, data, str(exc))
            return
        if record_name == PACK_RECORD and slot is None:  # a request's records of one user, in order
            self._apply_pack(partition, offset, record["records"])
            return
        self._apply_decoded(partition, offset, data, position, slot, record_name, record)

    def _apply_pack(self, partition: int, offset: int, items: list[bytes]) -> None:
        """Each record of a pack at its own position (partition, offset, index): a bad one is rejected
        alone, with its index, and the others are applied."""
        decoder, unreadable, processor = self.reader.pack_decoder(), self.publisher.unreadable, self.processor
        decode, raw = decoder.decode, decoder.raw
        processor.run = None
        ran: dict[str, int] = {}  # events published by runs, per workspace: counted once per pack
        for index, item in enumerate(items):
            if processor.run is not None and (got := raw(item)) is not None:
                # The usual event of a run, from its bytes (raw_event), when it needs nothing else.
                position = [partition, offset, index]
                value = processor.raw_event(got[0], got[1], position)
                if value is not None:
                    ws = str(got[1].get("workspace_id"))
                    if type(value) is bytes and self._queue_run_event(processor.run.key, value):
                        ran[ws] = ran.get(ws, 0) + 1
                        continue
                    # A Fair Usage block, or an event the usual publishing checks: the record is read.
                    _, record = decode(item)
                    if type(value) is bytes:
                        outputs = [processor.raw_output(value, record)]
                    else:
                        outputs = [processor.rejection(EVENT_RECORD, record, str(value))]
                    self.counts.record(ws, EVENT_RECORD)
                    self._publish(partition, offset, EVENT_RECORD, record, position, outputs)
                    continue
            try:
                record_name, record = decode(item)
                if record_name == PACK_RECORD:
                    raise SerdeError("a pack inside a pack")
            except SerdeError as exc:
                reason = f"record {index} of the pack: {exc}"
                unreadable(self.lanes_topic, partition, offset, item, reason)
                processor.run = None
                continue
            position = [partition, offset, index]
            if processor.run is not None and record_name == EVENT_RECORD and not record.get("origin"):
                # The event after an event of the same user: its resolution is reused (next_event).
                outputs = processor.next_event(record, position)
                if outputs is not None:
                    ws = str(record.get("workspace_id"))
                    if self._publish_event(outputs):
                        ran[ws] = ran.get(ws, 0) + 1
                    else:
                        self.counts.record(ws, EVENT_RECORD)
                        self._publish(partition, offset, EVENT_RECORD, record, position, outputs)
                    continue
            self._apply_decoded(partition, offset, item, position, None, record_name, record)
        for ws, n in ran.items():
            self.counts.run_events(ws, n)

    def _publish_event(self, outputs: list[Output]) -> bool:
        """Queue what :meth:`LaneProcessor.next_event` made in its usual shape: one enriched event, encoded,
        whose only state write is its seen mark, all within their limits. False: nothing was done, the
        general path (:meth:`_publish`) checks and publishes it (and rejects what is too large)."""
        if len(outputs) != 1:
            return False
        output = outputs[0]
        value = output.encoded
        if value is None or output.topic != EVENTS:
            return False
        return self._queue_run_event(output.key, value)

    def _queue_run_event(self, key: bytes, value: bytes) -> bool:
        """Queue a run's enriched event when it and the state it wrote (its seen mark) are within their
        limits and it wrote nothing else; False: nothing was done."""
        events, limit, seen_room = self._run_limits()
        identity, users, devices, index, seen = self.state.tables
        if (
            len(key) + len(value) > limit
            or identity.pending
            or users.pending  # a Fair Usage block lapsed: its deletion
            or devices.pending
            or index.pending
            or (seen.pending and max(map(len, seen.pending)) > seen_room)
        ):
            return False
        self.publisher.producer.produce(events, value, key, checked=True)
        seen.stage()
        return True

    def _run_limits(self) -> tuple[str, int, int]:
        """The events topic's name and the largest enriched event it takes; the longest seen-mark key its
        changelog takes (see :meth:`_too_large`): worked out once, as the producer reads a limit once."""
        if self._run_room is None:
            events = self.publisher.topic_names[EVENTS]
            self._run_room = events, self.publisher.producer.limit(events), self._seen_room()
        return self._run_room

    def _seen_room(self) -> int:
        """The longest seen-mark key its changelog takes (see :meth:`_too_large`); worked out once, as the
        producer reads a topic's limit once."""
        if self._mark_room is None:
            limit = self.producer.limit(self.changelogs[SEEN])
            self._mark_room = limit - bundles.KEY_ROOM - bundles.OVERHEAD - MAX_SEEN_VALUE
        return self._mark_room

    def _apply_decoded(
        self,
        partition: int,
        offset: int,
        data: bytes,
        position: list[int],
        slot: str | None,
        record_name: str,
        record: dict[str, Any],
    ) -> None:
        outputs = self.processor.process(record_name, record, position, raw=data, slot=slot)
        if record.get("origin"):
            outputs += outcome_of(record_name, record, outputs, self.processor.clock())
        self.counts.record(str(record.get("workspace_id") or ""), record_name)
        self._publish(partition, offset, record_name, record, position, outputs)

    def _publish(
        self,
        partition: int,
        offset: int,
        record_name: str,
        record: dict[str, Any] | None,
        position: list[int],
        outputs: list[Output],
    ) -> None:
        """Queue a record's outputs; when one of them (or a state write) is too large, the record is
        rejected with the reason instead and its state changes dropped."""
        encoded = [self.publisher.encode(output) for output in outputs]
        reason = self._too_large(outputs, encoded)
        if reason is not None:
            log.warning("partition %d: rejected %s at offset %d: %s", partition, record_name, offset, reason)
            if record is None:  # a protocol message: nothing to reject but the message itself
                self.state.discard()
                self.publisher.unreadable(self.lanes_topic, partition, offset, b"", reason)
                return
            outputs = [self.processor.reject(record_name, record, position, reason)]
            encoded = [self.publisher.encode(output) for output in outputs]
        for output, record_bytes in zip(outputs, encoded, strict=True):
            self.publisher.send(output, record_bytes, checked=reason is None)
            self.counts.output(output)
        self.state.stage()

    def _too_large(self, outputs: list[Output], encoded: list[Encoded]) -> str | None:
        """Why the record's outputs or state writes cannot be written, or None when they can."""
        check = self.producer.check
        for output, (topic, key, value) in zip(outputs, encoded, strict=True):
            try:
                check(topic, key, value)
            except RecordTooLarge as exc:
                return f"the {output.record_name} it produces would be too large: {exc}"
        # Every table, not only the growing ones: an identifier or device id near the ingest limit makes
        # an index key (and a device index value) that large too.
        for index, table in enumerate(self.state.tables):
            if not table.pending:  # most records write only a seen mark
                continue
            topic = self.changelogs[index]
            if index == SEEN:  # a position (three ints) under a key: bounded without encoding it
                limit = self._seen_room()
                for key in table.pending:
                    if len(key) > limit:
                        size = len(key) + MAX_SEEN_VALUE
                        big = RecordTooLarge(topic, size, limit + MAX_SEEN_VALUE)
                        return f"the stored {TABLES[index]} value it produces would be too large: {big}"
                continue
            for key, raw in table.pending_encoded():
                try:
                    check(topic, key, raw)
                except RecordTooLarge as exc:
                    return f"the stored {TABLES[index]} value it produces would be too large: {exc}"
        return None

    # --- ownership (called inside the consumer's poll, between batches) ---------------------------
    def _assigned(self, consumer: Consumer, partitions: list[TP]) -> None:
        mine = [TopicPartition(topic, partition) for topic, partition in partitions]
        consumer.incremental_assign(mine)
        consumer.pause(mine)  # until the partition's state is restored
        for _, partition in partitions:
            self.owned.add(partition)
            self._opening.add(partition)  # its databases open before the next restore step
        # Also when nothing new is assigned: a growth's new partitions may all go to another member, and
        # this one must still notice the count changed to move its old partitions' state.
        self._recount = True
        self.state.clear_cache()
        log.info("%s: %s", OWNED_LOG, sorted(self.owned))

    def _revoked(self, consumer: Consumer, partitions: list[TP]) -> None:
        for _, partition in partitions:
            self._opening.discard(partition)
            self.restorer.cancel(partition)
            self.stores.close(partition)
            self.owned.discard(partition)
            self.ready.discard(partition)
            self._rewind.pop(partition, None)
            self._deferred.pop(partition, None)
            self._check.discard(partition)
            self._announced.pop(partition, None)
            if self.backfill is not None:
                self.backfill.forget(partition)
        self.state.drop_batch()
        self.state.clear_cache()
        if self.processor.fair_usage is not None:  # their users' counts start again at the new owner
            self.processor.fair_usage.forget(partition for _, partition in partitions)
        if partitions:
            log.info("%s: %s", OWNED_LOG, sorted(self.owned))

    def _open_assigned(self) -> None:
        """Blocking: read the topic's partition count, open the databases of newly assigned partitions and
        begin their restore."""
        self._recount = False
        self._read_partitions()
        for partition in sorted(self._opening):
            self.restorer.start(partition, self.stores.open(partition))
        self._opening.clear()

    def _resume(self, client: Consumer, partition: int) -> None:
        """The partition's state is restored: its records are applied from now on."""
        if partition not in self.owned:
            return
        self.ready.add(partition)
        self._check.add(partition)
        tp = TopicPartition(self.lanes_topic, partition)
        client.resume([tp])
        rewind = self._rewind.pop(partition, None)
        if rewind is not None:
            try:
                client.seek(TopicPartition(self.lanes_topic, partition, rewind))
            except KafkaException as exc:  # not fetching yet: it starts from the committed offset anyway
                log.info("lane %d: no seek back to %d needed (%s)", partition, rewind, exc)

    def _read_partitions(self, wait_layout_s: float = 30.0) -> None:
        """The partition count of ingest.records; when it grew, the layout record that ``inflow topics grow``
        writes before growing the topic (read by the layout view) is waited for, so a partition born by the
        growth knows it must wait for the old partitions' state."""
        if self.metadata is None:
            self.partitions = max(self.partitions, 1 + max(self.owned, default=0))
            return
        count = len(topic_partitions(self.metadata, self.lanes_topic))
        if self.partitions and count > self.partitions:
            deadline = time.monotonic() + wait_layout_s
            while (self.layout() or {}).get("partitions") != count and time.monotonic() < deadline:
                time.sleep(0.2)
            if (self.layout() or {}).get("partitions") != count:
                log.error(
                    "%s grew from %d to %d partitions without `inflow topics grow`: identity state may be "
                    "split until every old partition has moved its keys",
                    self.lanes_topic,
                    self.partitions,
                    count,
                )
            log.info("%s grew from %d to %d partitions", self.lanes_topic, self.partitions, count)
            self._check |= self.owned
            if self.processor.fair_usage is not None:  # users move between partitions
                self.processor.fair_usage.clear()
        self.partitions = count

    def owned_lanes(self) -> list[int]:
        return sorted(self.owned)


def outcome_of(record_name: str, record: dict[str, Any], outputs: list[Output], now: int) -> list[Output]:
    """The RecordOutcome of an applied file row (the importer's run history counts users created and
    updated, events added): none for a row forwarded to another partition (its outcome comes from there),
    a duplicate (nothing applied) or a rejection (the poller reads processors.rejected)."""
    if not outputs or any(o.topic == REJECTED or o.raw is not None for o in outputs):
        return []
    if record_name == "EventRecord":
        outcome = "added"
    elif record_name == "UserUpsert":
        created = any(o.topic == PROFILES and o.record.get("revision") == 1 for o in outputs)
        outcome = "created" if created else "updated"
    else:
        return []
    ws = str(record.get("workspace_id") or "")
    value = {
        "workspace_id": ws,
        "event_uuid": str(record.get("event_uuid") or ""),
        "record_name": record_name,
        "origin": str(record["origin"]),
        "request_id": record.get("request_id"),
        "outcome": outcome,
        "reason": "",
        "applied_at": now,
    }
    return [Output(OUTCOMES, ws.encode(), "RecordOutcome", value)]


class Counts:
    """What a batch did, counted in plain dicts and handed to the Prometheus metrics once per batch (a
    labelled counter per record would cost more than the record)."""

    TYPES = {
        "UserUpsert": "user",
        "DeviceUpsert": "device",
        "EventRecord": "event",
        "MergeRequest": "merge",
        "DeleteRequest": "delete",
        "DeviceOptOut": "opt_out",
    }

    def __init__(self) -> None:
        self.applied: dict[tuple[str, str], int] = {}
        self.outputs: dict[tuple[str, str], int] = {}
        self.rejected: dict[tuple[str, str], int] = {}
        self.merges: dict[str, int] = {}

    def record(self, workspace: str, record_name: str) -> None:
        key = (workspace, self.TYPES.get(record_name, "other"))
        self.applied[key] = self.applied.get(key, 0) + 1

    def run_events(self, workspace: str, n: int) -> None:
        """``n`` events applied by a run, each published as one enriched event (:meth:`record` and
        :meth:`output` for each, at once)."""
        applied, published = (workspace, "event"), (workspace, EVENTS)
        self.applied[applied] = self.applied.get(applied, 0) + n
        self.outputs[published] = self.outputs.get(published, 0) + n

    def output(self, output: Output) -> None:
        workspace = str(output.record.get("workspace_id") or "")
        if output.topic == REJECTED:
            key = (workspace, wm.reason_class(str(output.record.get("reason") or "")))
            self.rejected[key] = self.rejected.get(key, 0) + 1
        elif output.raw is None:
            key = (workspace, output.topic)
            self.outputs[key] = self.outputs.get(key, 0) + 1
            if output.record.get("event_code") == "MOE_USER_MERGED":
                self.merges[workspace] = self.merges.get(workspace, 0) + 1

    def publish(self, topic: str, seconds: float, restoring: int) -> None:
        for (workspace, kind), n in self.applied.items():
            wm.RECORDS_IN.labels(workspace, topic).inc(n)
            wm.RECORDS_APPLIED.labels(workspace, kind).inc(n)
        for (workspace, out), n in self.outputs.items():
            wm.RECORDS_OUT.labels(workspace, out).inc(n)
        for (workspace, reason), n in self.rejected.items():
            wm.REJECTIONS.labels(workspace, reason).inc(n)
        for workspace, n in self.merges.items():
            wm.MERGES.labels(workspace).inc(n)
        wm.BATCH_APPLY.observe(seconds)
        wm.RESTORING.set(restoring)
        self.applied.clear()
        self.outputs.clear()
        self.rejected.clear()
        self.merges.clear()


def _is_growth_message(data: bytes | None) -> bool:
    """MOVE and MARK are applied even while a partition waits for a growth; nothing else is."""
    if not data or not protocol.is_protocol(data):
        return False
    try:
        return protocol.decode(data).kind in (protocol.MOVE, protocol.MARK)
    except LaneFramingError:
        return False


def _by_partition(batch: list[Message]) -> dict[int, list[Message]]:
    """The batch's records grouped by lane partition, each group in offset order."""
    groups: dict[int, list[Message]] = {}
    for msg in batch:
        groups.setdefault(int(msg.partition() or 0), []).append(msg)
    return groups
