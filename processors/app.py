"""The Faust app: a router task (ingest topics -> lane topic keyed by workspace, ``processors.router``)
and a lane agent that runs :class:`~inflow.processors.engine.LaneProcessor` over RocksDB tables with
changelogs.

Consistency across partitions and workers: the lane topic is keyed by workspace id, so all records of
a workspace are in one lane partition, in the order the router forwarded them, and Kafka's group
protocol gives that partition (and the co-partitioned changelog partitions of every table) to exactly
one worker. A merge therefore reads and writes only state of its own partition. When a worker dies or
a new one joins, the partition moves and the new owner rebuilds the tables from the changelogs before
it processes the next record; records after the last committed offset are replayed and de-duplicated
on event_uuid. Both agents work in batches: a lane batch's outputs are produced before the state
changes that record them (one RocksDB and changelog write per changed key and batch), all through one
librdkafka producer that is flushed before the batch is acked, so offsets are committed only after
what they caused is on the broker (at-least-once, effectively once per event_uuid). Events fetched
before a rebalance are not applied: the partition's owner in the new generation reads them again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Any, cast

import faust
import rocksdict
from faust.streams import Stream
from faust.types import TP, EventT, StreamT

from inflow.config.settings import KafkaSettings
from inflow.config.topics import TopicSpec
from inflow.processors.delivery import BatchProducer
from inflow.processors.engine import LaneProcessor
from inflow.processors.exceptions import LaneFramingError
from inflow.processors.lanes import OWNED_LOG, unpack_records
from inflow.processors.outputs import EVENTS, PROFILES, REJECTED, Output
from inflow.processors.router import Router
from inflow.processors.settings import WorkerSettings
from inflow.processors.state import JsonTable, State
from inflow.processors.watchdog import LaneWatchdog
from inflow.processors.workspaces import WorkspaceDirectory
from inflow.schemas.avro_template import record_encoder
from inflow.schemas.exceptions import SerdeError
from inflow.schemas.serde import AvroSerde, Encoder

log = logging.getLogger(__name__)
INGEST_TOPICS = ("ingest.users", "ingest.devices", "ingest.events")
LANES = "processors.lanes"
TABLES = ("identity", "users", "devices", "device_index", "seen")
RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


def build_app(
    kafka: KafkaSettings,
    worker: WorkerSettings,
    directory: WorkspaceDirectory,
    catalogue: dict[str, TopicSpec],
    data_dir: str,
) -> faust.App:
    """A configured Faust app with its two agents; nothing connects until a worker starts it."""
    lanes_spec = catalogue[LANES]
    partitions = lanes_spec.entry.partitions
    app = faust.App(
        f"{kafka.topic_prefix}.processors",
        broker=f"kafka://{kafka.client_config()['bootstrap.servers']}",
        store="rocksdb://",
        datadir=data_dir,
        topic_partitions=partitions,
        topic_replication_factor=lanes_spec.entry.replication,
        topic_allow_declare=True,
        topic_disable_leader=True,
        web_enabled=False,
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=worker.linger_ms / 1000.0,
        producer_max_batch_size=worker.max_batch_size,
        broker_max_poll_records=worker.max_poll_records,
        consumer_max_fetch_size=worker.max_fetch_bytes,
        broker_commit_interval=worker.commit_interval_s,
        broker_session_timeout=worker.session_timeout_s,
        stream_buffer_maxsize=worker.stream_buffer_maxsize,
        stream_wait_empty=False,
        table_standby_replicas=0,
        processing_guarantee="at_least_once",
    )
    # faust's send buffer warns and stalls the stream above 100 queued messages; batches need more room.
    app.producer.buffer.max_messages = worker.producer_buffer_messages
    serde = AvroSerde(kafka.schema_registry_url)
    lanes = app.topic(lanes_spec.name, partitions=partitions, **RAW)
    topic_names = {short: catalogue[short].name for short in (PROFILES, EVENTS, REJECTED)}
    # bytes key and value types make faust use the raw codec for the store and the changelog alike.
    # faust's RocksDB defaults (64 MiB x 3 memtables and a 2 GiB block cache per table and partition) let
    # a worker's memory grow with what it has written; these bound it (tables x lane partitions owned).
    rocksdb = {
        "write_buffer_size": worker.rocksdb_write_buffer_bytes,
        "max_write_buffer_number": 2,
        "block_cache_size": worker.rocksdb_block_cache_bytes,
    }
    # Seen marks (one per record) would grow without end: they live for the de-duplication window, in
    # RocksDB (TTL, dropped at compaction) and in the changelog (compact + delete after the window).
    seen_rocksdb = rocksdb | {"ttl": worker.dedup_window_s}
    seen_topic = {"cleanup.policy": "compact,delete", "retention.ms": str(worker.dedup_window_s * 1000)}
    tables = [
        app.Table(
            name,
            default=None,
            partitions=partitions,
            key_type=bytes,
            value_type=bytes,
            options=seen_rocksdb if name == "seen" else rocksdb,
            extra_topic_configs=seen_topic if name == "seen" else None,
        )
        for name in TABLES
    ]
    views = [StoreView(table) for table in tables]
    # Seen marks are read once per record and rarely again: a small cache.
    limits = [worker.cache_limit if name != "seen" else max(1, worker.cache_limit // 10) for name in TABLES]
    state = State(*(JsonTable(view, limit) for view, limit in zip(views, limits, strict=True)))
    processor = LaneProcessor(state, directory)
    # murmur2 like aiokafka's (and Java's) default partitioner: a workspace keeps the lane it always had.
    config = kafka.producer_config(**{"linger.ms": worker.linger_ms, "partitioner": "murmur2_random"})
    route_out = BatchProducer(config, worker.flush_timeout_s)
    lane_out = BatchProducer(config, worker.flush_timeout_s)
    persisted: dict[tuple[int, int], int] = {}
    applied: dict[int, int] = {}  # lane partition -> lane messages applied, for the progress log
    stage = {"lane": "starting"}
    rewound: dict[TP, int] = {}  # lane partitions re-read after skipping stale events: from this offset

    encoders: dict[tuple[str, str], Encoder] = {}

    def publish(producer: BatchProducer, output: Output) -> None:
        topic = topic_names[output.topic]
        encode = encoders.get((output.record_name, topic))
        if encode is None:  # compiled per record type (byte-identical to fastavro, checked when built)
            encode = encoders[(output.record_name, topic)] = record_encoder(serde, output.record_name, topic)
        producer.produce(topic, output.key, encode(output.record))

    async def lane(stream: StreamT) -> None:
        """Apply a batch of lane records per lane partition; outputs, then state, then the acks.

        Each partition's records are applied in order, their state writes coalesced into one RocksDB and
        changelog write per changed key, then everything is flushed before take_events acks the batch.
        """
        batch: Sequence[EventT]
        stage["lane"] = "waiting for a batch"
        async for batch in cast(Stream, stream).take_events(
            worker.lane_batch_packs, within=worker.batch_within_s
        ):
            stage["lane"] = "applying"
            generation = app.consumer_generation_id
            for events in _by_partition(batch):
                events = _after_rewind(events, rewound)
                if not events:
                    continue
                if _still_owned(app, events):
                    apply_partition(stream, events)
                else:
                    await skip_stale(events)
            stage["lane"] = "flushing"
            await lane_out.flush()
            if app.consumer_generation_id == generation:
                persist_offsets()
            persisted.clear()
            stage["lane"] = "waiting for a batch"

    async def skip_stale(events: list[EventT]) -> None:
        """Events fetched before a rebalance are not applied nor acked; if the lane is still ours, it is
        read again from the first of them (faust would not fetch them again before the next rebalance)."""
        for event in events:
            event.message.acked = True
        tp, offset = events[0].message.tp, events[0].message.offset
        log.warning(
            "lane %s: %d records fetched before a rebalance, re-reading from %d", tp, len(events), offset
        )
        if tp in app.consumer.assignment():
            await reread(tp, offset)

    async def reread(tp: TP, offset: int) -> None:
        """Seek a lane partition back; its events before ``offset`` still in flight are dropped."""
        rewound[tp] = offset
        await app.consumer.seek(tp, offset)

    def owned_lanes() -> list[int]:
        return sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == lanes_spec.name)

    def apply_partition(stream: StreamT, events: list[EventT]) -> None:
        partition = events[0].message.partition
        applied[partition] = applied.get(partition, 0) + len(events)
        watchdog.applied(partition)
        # RocksDB reads and writes go to the store of this lane partition.
        cast(Stream, stream)._set_current_event(events[0])
        for view in views:
            view.use_partition(partition)
        for event in events:
            apply_message(event)
        for index, (table, writes) in enumerate(zip(tables, state.commit(), strict=True)):
            if not writes:
                continue
            changelog = table.changelog_topic.get_topic_name()

            def delivered(msg: Any, index: int = index) -> None:
                key = (index, msg.partition())
                persisted[key] = max(persisted.get(key, -1), msg.offset())

            # One partition, one idempotent producer: the last write's offset is the highest.
            for key, raw in writes[:-1]:
                lane_out.produce(changelog, key, raw, partition=partition)
            key, raw = writes[-1]
            lane_out.produce(changelog, key, raw, partition=partition, on_delivered=delivered)

    def apply_message(event: EventT) -> None:
        try:
            records = unpack_records(event.value)
        except LaneFramingError as exc:
            publish(lane_out, _unreadable_event(event, str(exc), processor))
            return
        for index, data in enumerate(records):
            try:
                record_name, record = serde.decode(data)
            except SerdeError as exc:
                publish(lane_out, _unreadable_event(event, str(exc), processor, data))
                continue
            position = [event.message.partition, event.message.offset, index]
            for output in processor.process(record_name, record, position):
                publish(lane_out, output)
            state.stage()

    def persist_offsets() -> None:
        """Tell each RocksDB store how far its changelog is applied, so a restart replays only the rest."""
        for (index, partition), offset in persisted.items():
            table = tables[index]
            cast(Any, table.data).set_persisted_offset(
                TP(table.changelog_topic.get_topic_name(), partition), offset
            )
        persisted.clear()

    def reject_unreadable(topic: str, partition: int, offset: int, data: bytes | None, reason: str) -> None:
        publish(route_out, _unreadable(topic, partition, offset, data, reason, processor))

    router = Router(
        kafka.consumer_config(f"{app.conf.id}.router", **{"fetch.max.bytes": 52_428_800}),
        route_out,
        [catalogue[name].name for name in INGEST_TOPICS],
        lanes_spec.name,
        reject_unreadable,
        worker.batch_size,
        worker.batch_within_s,
    )
    app.task(router.run)
    app.agent(lanes, name="lane")(lane)

    watchdog = LaneWatchdog(kafka.consumer_config(app.conf.id), lanes_spec.name, worker.lane_stall_s)

    @app.timer(interval=worker.lane_stall_s / 3)
    async def _watch_lanes() -> None:
        """Re-read an owned lane partition that has records waiting but got nothing delivered."""
        if getattr(app, "rebalancing", False):
            return
        idle = stage["lane"] == "waiting for a batch"
        loop = asyncio.get_running_loop()
        stalled = await loop.run_in_executor(None, watchdog.stalled, owned_lanes(), idle)
        for partition, offset in stalled.items():
            tp = TP(lanes_spec.name, partition)
            if getattr(app, "rebalancing", False) or tp not in app.consumer.assignment():
                continue
            log.error(
                "lane %s: records waiting from offset %d but none delivered for %.0fs; re-reading from there",
                tp,
                offset,
                worker.lane_stall_s,
            )
            await reread(tp, offset)

    @app.timer(interval=worker.progress_log_s)
    async def _progress() -> None:
        """What moved since the last line: records routed, applied per lane partition, and why not."""
        consumer = app.consumer
        log.info(
            "progress: routed %d (router owns %d ingest partitions), applied %s, lanes %s, paused %s, "
            "flow %s/%s, lane agent %s, rewinding %s",
            router.forwarded,
            router.owned_partitions(),
            dict(sorted(applied.items())),
            owned_lanes(),
            sorted(
                tp.partition
                for tp in getattr(consumer, "_paused_partitions", ())
                if tp.topic == lanes_spec.name
            ),
            "active" if getattr(consumer, "flow_active", True) else "stopped",
            "active" if app.flow_control.is_active() else "suspended",
            stage["lane"],
            {tp.partition: offset for tp, offset in rewound.items()},
        )
        router.forwarded = 0
        applied.clear()

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        state.drop_batch()
        state.clear_cache()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
        state.clear_cache()
        rewound.clear()  # the rebalance itself re-reads from the committed offsets
        owned = sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == lanes_spec.name)
        watchdog.assigned(owned)
        log.info("%s: %s", OWNED_LOG, owned)

    return app


class StoreView(MutableMapping[bytes, bytes]):
    """One lane partition's RocksDB database of a table, without faust's per-write changelog message (the
    lane agent sends the changelog itself, once per changed key and batch, through librdkafka) and without
    faust's per-access lookups of the current event and key index: the lane calls :meth:`use_partition`
    before it applies a partition's records."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.db: Any = None

    def use_partition(self, partition: int) -> None:
        """Reads and writes go to this lane partition's database (opened by faust, kept open while owned)."""
        self.db = self.table.data._db_for_partition(partition)

    def get(self, key: bytes, default: Any = None) -> Any:
        value = self.db.get(key)
        return default if value is None else value

    def __getitem__(self, key: bytes) -> bytes:
        value = self.db.get(key)
        if value is None:
            raise KeyError(key)
        return cast(bytes, value)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.db.put(key, value)

    def __delitem__(self, key: bytes) -> None:
        self.db.delete(key)

    def write_many(self, writes: list[tuple[bytes, bytes | None]]) -> None:
        """A batch's writes (None: delete) in one RocksDB write."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, raw in writes:
            if raw is None:
                batch.delete(key)
            else:
                batch.put(key, raw)
        self.db.write(batch)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.db.keys())

    def __len__(self) -> int:
        return sum(1 for _ in self.db.keys())


def _by_partition(batch: Sequence[EventT]) -> list[list[EventT]]:
    """The batch's events grouped by lane partition, each group in offset order."""
    groups: dict[int, list[EventT]] = {}
    for event in batch:
        groups.setdefault(event.message.partition, []).append(event)
    return list(groups.values())


def _after_rewind(events: list[EventT], rewound: dict[TP, int]) -> list[EventT]:
    """After a rewind, a lane partition's events before the re-read one are dropped (not acked)."""
    tp = events[0].message.tp
    if tp not in rewound:
        return events
    start = next((i for i, e in enumerate(events) if e.message.offset == rewound[tp]), len(events))
    for event in events[:start]:
        event.message.acked = True
    if start < len(events):
        del rewound[tp]
    return events[start:]


def _still_owned(app: faust.App, events: list[EventT]) -> bool:
    """False when a rebalance happened after these events were fetched (another worker may own them now)."""
    message = events[0].message
    return message.tp in app.consumer.assignment() and all(
        event.message.generation_id == app.consumer_generation_id for event in events
    )


def _unreadable_event(
    event: EventT, reason: str, processor: LaneProcessor, data: bytes | None = None
) -> Output:
    message = event.message
    value = (event.value or b"") if data is None else data
    return _unreadable(message.topic, message.partition, message.offset, value, reason, processor)


def _unreadable(
    topic: str, partition: int, offset: int, data: bytes | None, reason: str, processor: LaneProcessor
) -> Output:
    """A message that is not an Inflow record: kept whole (hex) in the rejected topic, with its position."""
    record = {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "value_hex": bytes(data or b"").hex(),
    }
    value = {
        "workspace_id": "",
        "event_uuid": "",
        "record_name": "unknown",
        "outcome": "rejected",
        "reason": reason,
        "request_id": None,
        "origin": f"{topic}/{partition}/{offset}",
        "record_json": json.dumps(record),
        "rejected_at": processor.clock(),
    }
    log.warning("rejected unreadable message at %s: %s", value["origin"], reason)
    return Output(REJECTED, b"", "RejectedRecord", value)
