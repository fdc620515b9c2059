"""Stream operations shared by ``inflow streams ...`` and the admin API: one implementation of each.

Each function reads what it needs from a :class:`ControlView` the caller has read to its end
(:func:`~inflow.sinks.streams.control.read_control`), writes one control record and waits for the broker's
acknowledgement. Errors are :class:`StreamDefinitionError` / :class:`UnknownStreamError` /
:class:`DlqError` with the reason, which the CLI prints and the API answers as a 4xx.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from dateutil.parser import isoparse

from inflow.config.secrets import SecretBox
from inflow.config.settings import KafkaSettings
from inflow.kafka.clients import new_admin, new_consumer, watermarks
from inflow.schemas.serde import AvroSerde
from inflow.sinks.streams import dlq as dlq_ops
from inflow.sinks.streams.addresses import literal_host_verdict
from inflow.sinks.streams.control import (
    DEFINITIONS_TOPIC,
    STATE_TOPIC,
    ControlView,
    definition_record,
    pause_view,
    publish,
    state_record,
)
from inflow.sinks.streams.definitions import StreamDefinition, parse_definition, starting
from inflow.sinks.streams.destinations.base import Outcome, OutgoingBatch
from inflow.sinks.streams.destinations.registry import open_destination
from inflow.sinks.streams.exceptions import DlqError, StreamDefinitionError, UnknownStreamError
from inflow.sinks.streams.payload import dump
from inflow.sinks.streams.settings import SinkSettings


def find(view: ControlView, stream_id: str) -> StreamDefinition:
    """The stream's definition; a held or unknown id is an error naming the known streams."""
    found = view.definitions().get(stream_id)
    if found is None and stream_id in view.invalid_stored():
        raise StreamDefinitionError(f"stream {stream_id!r} is held: {view.invalid[stream_id]}")
    if found is None:
        known = ", ".join(sorted(view.definitions())) or "none"
        raise UnknownStreamError(f"no stream {stream_id!r}; known streams: {known}")
    return found


def define(
    kafka: KafkaSettings,
    serde: AvroSerde,
    view: ControlView,
    box: SecretBox,
    data: dict[str, Any],
    *,
    replace: bool = False,
    settings: SinkSettings | None = None,
    replay_from: str | None = None,
) -> tuple[StreamDefinition, bool]:
    """Validate ``data`` as a stream definition, encrypt its secrets and store it; returns the definition
    and whether it replaced an existing one. YAML streams are changed in the file, never here.

    A new stream starts at the time it is defined (MoEngage streams start when set up), or at
    ``replay_from`` (ISO 8601) when given; a replaced stream keeps its position."""
    stream_id = str(data.get("id", ""))
    if stream_id in view.yaml:
        raise StreamDefinitionError(f"stream {stream_id!r} is defined in the YAML file; change it there")
    exists = stream_id in view.stored or stream_id in view.invalid
    if exists and not replace:
        raise StreamDefinitionError(f"stream {stream_id!r} exists; use --replace to change it")
    if exists and replay_from is not None:
        raise StreamDefinitionError(
            f"--replay-from applies to a new stream; stream {stream_id!r} keeps its position "
            "(remove it and add it again to start over)"
        )
    replay_time = parse_replay_from(replay_from) if replay_from is not None else None
    definition = parse_definition(data, f"stream {stream_id}")
    verdict = literal_host_verdict(definition.url, settings or SinkSettings())
    if not verdict.allowed:
        raise StreamDefinitionError(f"stream {stream_id}: url: {verdict.reason}")
    if exists:
        previous = view.stored.get(stream_id)
        definition = definition.model_copy(update={"start_at": previous.start_at if previous else None})
    else:
        definition = starting(definition, replay_time, datetime.now(UTC))
        forget_position(kafka, f"{kafka.topic_prefix}.streams.{stream_id}")
    stored = definition.stored(box)
    record = definition_record(definition.id, stored)
    publish(kafka, DEFINITIONS_TOPIC, definition.id, serde.encode("StreamDefinition", record))
    return definition, exists


def remove(kafka: KafkaSettings, serde: AvroSerde, view: ControlView, stream_id: str) -> None:
    """Remove a stored stream (a YAML stream is removed from the file)."""
    if stream_id in view.yaml:
        raise StreamDefinitionError(f"stream {stream_id!r} is defined in the YAML file; remove it there")
    if stream_id not in view.invalid:
        find(view, stream_id)
    record = definition_record(stream_id, None)
    publish(kafka, DEFINITIONS_TOPIC, stream_id, serde.encode("StreamDefinition", record))


def pause(
    kafka: KafkaSettings, serde: AvroSerde, view: ControlView, stream_id: str, mode: str | None = None
) -> str:
    """Pause a stream (``skip``: events that arrive meanwhile are never sent; ``resume``: sent later);
    returns the mode used (default: the stream's ``pause_mode``)."""
    d = find(view, stream_id)
    chosen: str = mode or d.pause_mode
    if chosen not in ("skip", "resume"):
        raise StreamDefinitionError(f"--mode must be skip or resume, not {chosen!r}")
    state = view.states.get(stream_id)
    if state is not None and state["paused"]:
        raise StreamDefinitionError(f"stream {stream_id!r} is already paused")
    record = state_record(stream_id, True, chosen, datetime.now(UTC))
    publish(kafka, STATE_TOPIC, stream_id, serde.encode("StreamState", record))
    return chosen


def resume(kafka: KafkaSettings, serde: AvroSerde, view: ControlView, stream_id: str) -> str:
    """Resume a paused stream; returns its pause mode."""
    find(view, stream_id)
    state = view.states.get(stream_id)
    if state is None or not state["paused"]:
        raise StreamDefinitionError(f"stream {stream_id!r} is not paused")
    record = state_record(stream_id, False, state["mode"], state["changed_at"])
    publish(kafka, STATE_TOPIC, stream_id, serde.encode("StreamState", record))
    return str(state["mode"])


def hold_reasons(view: ControlView, box: SecretBox | None, settings: SinkSettings) -> dict[str, str]:
    """Streams a sink with this key and these settings holds, with the reason: a stored definition that
    cannot be read, secrets that do not decrypt, a refused value or address, a disabled workspace."""
    holds = dict(view.invalid_stored())
    for stream_id, d in view.definitions().items():
        if d.workspace_id is not None and d.workspace_id in view.disabled_workspaces:
            holds[stream_id] = f"workspace {d.workspace_id} disabled"
            continue
        try:
            open_destination(d, box, settings)  # nothing is opened: the checks the sink makes at start
        except StreamDefinitionError as exc:
            holds[stream_id] = str(exc)
    return holds


def state_of(view: ControlView, holds: dict[str, str], stream_id: str) -> str:
    """``held``, ``paused (mode)`` or ``running``."""
    if stream_id in holds:
        return "held"
    d = view.definitions()[stream_id]
    state = pause_view(d, view.states.get(stream_id))
    return f"paused ({state.mode})" if state.paused else "running"


def describe(view: ControlView, box: SecretBox | None, settings: SinkSettings) -> list[dict[str, Any]]:
    """Every stream with its source, definition (secrets masked), state and hold reason."""
    holds = hold_reasons(view, box, settings)
    out = []
    for stream_id, d in sorted(view.definitions().items()):
        pv = pause_view(d, view.states.get(stream_id))
        out.append(
            {
                "id": stream_id,
                "source": "yaml" if stream_id in view.yaml else "stored",
                "state": state_of(view, holds, stream_id),
                "paused": pv.paused,
                "pause_mode": pv.mode,
                "held": holds.get(stream_id),
                "definition": d.public(box),
            }
        )
    for stream_id, reason in sorted(view.invalid_stored().items()):
        out.append(
            {
                "id": stream_id,
                "source": "stored",
                "state": "held",
                "paused": False,
                "pause_mode": None,
                "held": reason,
                "definition": None,
            }
        )
    return out


def pause_state(view: ControlView, stream_id: str) -> dict[str, Any]:
    return dataclasses.asdict(pause_view(find(view, stream_id), view.states.get(stream_id)))


def redrive(
    kafka: KafkaSettings,
    serde: AvroSerde,
    view: ControlView,
    idents: list[str] | None,
    stream_id: str | None = None,
    all_: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> list[dlq_ops.DeadBatch]:
    """Send dead batches (by moe_request_id or partition:offset, or all of ``stream_id``) again through the
    running sink's retry path; every named batch must belong to a known stream."""
    if not idents and not all_:
        raise DlqError("name the batches to redrive, or pass --all")
    batches = dlq_ops.read_dlq(kafka, serde, stream_id)
    chosen = dlq_ops.select(batches, idents) if idents else batches
    for b in chosen:
        find(view, b.record["stream_id"])
    progress = None if on_batch is None else (lambda _batch: on_batch(len(chosen)))
    return dlq_ops.redrive(kafka, serde, chosen, progress)


def parse_replay_from(text: str) -> datetime:
    """An ISO 8601 time; without an offset it is UTC."""
    try:
        when = isoparse(text)
    except (ValueError, OverflowError) as exc:
        raise StreamDefinitionError(f"--replay-from {text!r} is not an ISO 8601 time: {exc}") from exc
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def forget_position(kafka: KafkaSettings, group: str, timeout: float = 30.0) -> None:
    """Delete the export group of a removed stream with the same id, so a new stream starts afresh.

    The sink stops a removed stream within a second; until its consumers have left, the group is not
    empty and the deletion is tried again, as it is while the group coordinator moves or loads."""
    admin = new_admin(kafka)
    deadline = time.monotonic() + timeout
    while True:
        future = admin.delete_consumer_groups([group], request_timeout=10)[group]
        try:
            future.result()
            return
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            code = err.code() if err is not None else None
            if code == KafkaError.GROUP_ID_NOT_FOUND:
                return
            # Not empty yet (the sink is stopping the removed stream), or the group coordinator is moving
            # or loading (a new cluster, a broker restart): tried again until the deadline.
            again = code == KafkaError.NON_EMPTY_GROUP or (err is not None and err.retriable())
            if code in (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS):
                again = True
            if not again or time.monotonic() > deadline:
                raise StreamDefinitionError(
                    f"cannot clear the position of a former stream with this id (group {group}): {exc}"
                ) from exc
        time.sleep(0.5)


def sample_batch() -> OutgoingBatch:
    """One made-up event in the Streams format, marked as a test, for :func:`test_endpoint`."""
    now = datetime.now(UTC)
    event = {
        "event_name": "INFLOW_TEST_EVENT",
        "event_code": "INFLOW_TEST_EVENT",
        "event_uuid": str(uuid.uuid4()),
        "event_time": int(now.timestamp()),
        "event_type": "USER_ACTION_EVENT",
        "event_source": "INFLOW",
        "uid": "inflow-test-user",
        "event_attributes": {"test": True},
        "user_attributes": {},
        "device_attributes": {},
    }
    return OutgoingBatch(f"inflow-test-{uuid.uuid4()}", f"[{dump(event)}]", 1)


async def test_endpoint(
    definition: StreamDefinition, box: SecretBox | None, settings: SinkSettings | None = None
) -> Outcome:
    """Send one test event to the stream's endpoint, the way the sink sends batches (same headers, auth,
    address checks and timeout); the outcome says delivered, retriable or permanent, with the reason."""
    destination = open_destination(definition, box, settings or SinkSettings())
    try:
        return await destination.deliver(sample_batch())
    finally:
        await destination.close()


def group_progress(kafka: KafkaSettings, group: str, topic: str) -> dict[str, Any]:
    """Committed offset, end offset and lag per partition of the stream's consumer group."""
    consumer = new_consumer(kafka, group)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return {}
        tps = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        committed = consumer.committed(tps, timeout=10)
        out = {}
        for tp in committed:
            _, high = watermarks(consumer, tp)
            done = tp.offset if tp.offset >= 0 else None
            out[str(tp.partition)] = {"committed": done, "end": high, "lag": high - (done or 0)}
        return out
    finally:
        consumer.close()


def retry_depth(kafka: KafkaSettings, stream_id: str, limit: int = 20_000, timeout: float = 10.0) -> int:
    """Batches of the stream waiting in the retry topics: records keyed by the stream after its retry
    group's committed offsets (from the start when it has none). At most ``limit`` records are read."""
    from inflow.sinks.streams.retry import TIER_TOPICS

    consumer = new_consumer(kafka, f"{kafka.topic_prefix}.streams.{stream_id}.retry")
    key = stream_id.encode()
    count = read = 0
    try:
        tps = []
        ends: dict[tuple[str, int], int] = {}
        for short in TIER_TOPICS:
            topic = kafka.topic(short)
            meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
            if meta is None or meta.error is not None:
                continue
            tps += [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        positions = consumer.committed(tps, timeout=timeout)
        for tp in positions:
            low, high = watermarks(consumer, tp, timeout)
            start = tp.offset if tp.offset >= 0 else low
            if high > start:
                ends[(tp.topic, tp.partition)] = high
                tp.offset = max(start, low)
        if not ends:
            return 0
        consumer.assign([tp for tp in positions if (tp.topic, tp.partition) in ends])
        done: set[tuple[str, int]] = set()
        while len(done) < len(ends) and read < limit:
            batch = consumer.consume(num_messages=500, timeout=1.0)
            if not batch:
                break
            for msg in batch:
                if msg.error() is not None:
                    continue
                read += 1
                count += msg.key() == key
                tp_key = (str(msg.topic()), int(msg.partition() or 0))
                if int(msg.offset() or 0) + 1 >= ends[tp_key]:
                    done.add(tp_key)
        return count
    finally:
        consumer.close()


def dlq_depth(kafka: KafkaSettings, serde: AvroSerde, stream_id: str) -> int:
    return len(dlq_ops.read_dlq(kafka, serde, stream_id))
