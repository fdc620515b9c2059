"""The Faust app: a router agent (ingest topics -> lane topic keyed by workspace) and a lane agent that
runs :class:`~processors.engine.LaneProcessor` over RocksDB tables with changelog topics.

Consistency across partitions and workers: the lane topic is keyed by workspace id, so all records of
a workspace are in one lane partition, in the order the router forwarded them, and Kafka's group
protocol gives that partition (and the co-partitioned changelog partitions of every table) to exactly
one worker. A merge therefore reads and writes only state of its own partition. When a worker dies or
a new one joins, the partition moves and the new owner rebuilds the tables from the changelogs before
it processes the next record; records after the last committed offset are replayed and de-duplicated
on event_uuid. Outputs go through the same producer before the state changes that record them, and
offsets are committed only after the producer flushed (at-least-once, effectively once per event_uuid).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import faust
from faust.types import EventT, StreamT

from config.settings import KafkaSettings
from config.topics import TopicSpec
from processors.engine import LaneProcessor
from processors.exceptions import LaneFramingError
from processors.lanes import peek_workspace, unpack_records
from processors.outputs import EVENTS, PROFILES, REJECTED, Output
from processors.settings import WorkerSettings
from processors.state import JsonTable, State
from processors.workspaces import WorkspaceDirectory
from schemas.exceptions import SerdeError
from schemas.serde import AvroSerde

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
    ingest = app.topic(*(catalogue[name].name for name in INGEST_TOPICS), **RAW)
    lanes = app.topic(lanes_spec.name, partitions=partitions, **RAW)
    outputs = {short: app.topic(catalogue[short].name, **RAW) for short in (PROFILES, EVENTS, REJECTED)}
    # bytes key and value types make faust use the raw codec for the store and the changelog alike.
    tables = [
        app.Table(name, default=None, partitions=partitions, key_type=bytes, value_type=bytes)
        for name in TABLES
    ]
    state = State(*(JsonTable(table, worker.cache_limit) for table in tables))
    processor = LaneProcessor(state, directory)

    def publish(output: Output) -> None:
        value = serde.encode(output.record_name, output.record, topic=catalogue[output.topic].name)
        outputs[output.topic].send_soon(key=output.key, value=value)

    async def route(stream: StreamT) -> None:
        """Forward each ingest record, unchanged and in order, to its workspace's lane.

        Per event on purpose: a take()-batched router (packing several records per lane message) used
        a third less CPU but stranded a record across a rebalance in the benchmark; see
        docs/bench-processors.md.
        """
        event: EventT
        async for event in stream.events():
            try:
                workspace = peek_workspace(event.value)
            except LaneFramingError as exc:
                publish(_unreadable(event, str(exc), processor))
                continue
            lanes.send_soon(key=workspace.encode(), value=event.value)

    async def lane(stream: StreamT) -> None:
        """Apply each record of the lane: outputs first, then the state that records them.

        A lane message is one ingest record or a pack of several of one workspace (``lanes.pack_records``);
        table writes go to the changelog partition of the lane message being processed.
        """
        event: EventT
        async for event in stream.events():
            try:
                records = unpack_records(event.value)
            except LaneFramingError as exc:
                publish(_unreadable(event, str(exc), processor))
                continue
            for index, data in enumerate(records):
                try:
                    record_name, record = serde.decode(data)
                except SerdeError as exc:
                    publish(_unreadable(event, str(exc), processor, data))
                    continue
                position = [event.message.partition, event.message.offset, index]
                for output in processor.process(record_name, record, position):
                    publish(output)
                state.flush()

    app.agent(ingest, name="route")(route)
    app.agent(lanes, name="lane")(lane)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        state.discard()
        state.clear_cache()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
        state.clear_cache()
        owned = sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == lanes_spec.name)
        log.info("lane partitions owned by this worker: %s", owned)

    return app


def _unreadable(event: EventT, reason: str, processor: LaneProcessor, data: bytes | None = None) -> Output:
    """A message that is not an Inflow record: kept whole (hex) in the rejected topic, with its position."""
    message = event.message
    record = {
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "value_hex": bytes((event.value or b"") if data is None else data).hex(),
    }
    value = {
        "workspace_id": "",
        "event_uuid": "",
        "record_name": "unknown",
        "outcome": "rejected",
        "reason": reason,
        "request_id": None,
        "origin": f"{message.topic}/{message.partition}/{message.offset}",
        "record_json": json.dumps(record),
        "rejected_at": processor.clock(),
    }
    log.warning("rejected unreadable message at %s: %s", value["origin"], reason)
    return Output(REJECTED, b"", "RejectedRecord", value)
