"""Writing the workers' records: Avro-encoded outputs through one
:class:`~inflow.kafka.producer.KafkaProducer` per stage, and rejections of what cannot be written.

A stage (router or lane) produces a whole batch, then flushes its producer before it commits the batch's
offsets, so no offset is committed before what it caused is on the broker (at-least-once). A record over
its topic's size limit is never sent: the producer raises :class:`~inflow.kafka.errors.RecordTooLarge`
before queuing it, and the stage writes a RejectedRecord naming the reason instead (the lane rejects the
ingest record that would have produced it, see ``processors.lane``). A rejection that is itself too large
keeps its identifying fields and drops the copy of the record.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from inflow.kafka.errors import RecordTooLarge
from inflow.kafka.producer import KafkaProducer
from inflow.processors.outputs import REJECTED, Output
from inflow.schemas.avro_template import record_encoder
from inflow.schemas.serde import AvroSerde, Encoder

log = logging.getLogger(__name__)
Encoded = tuple[str, bytes, bytes | None]  # topic, key, value (None: a tombstone)


class Publisher:
    """Encodes outputs (compiled encoders, one per record type and topic) and queues them."""

    def __init__(
        self,
        producer: KafkaProducer,
        serde: AvroSerde,
        topic_names: dict[str, str],
        clock: Callable[[], int],
    ) -> None:
        self.producer = producer
        self.serde = serde
        self.topic_names = topic_names
        self.clock = clock
        self._encoders: dict[tuple[str, str], Encoder] = {}

    def encode(self, output: Output) -> Encoded:
        topic = self.topic_names[output.topic]
        if output.raw is not None:  # a protocol message, encoded by processors.protocol
            return topic, output.key, output.raw
        if output.tombstone:
            return topic, output.key, None
        if output.encoded is not None:
            return topic, output.key, output.encoded
        encode = self._encoders.get((output.record_name, topic))
        if encode is None:  # compiled per record type (byte-identical to fastavro, checked when built)
            encode = self._encoders[(output.record_name, topic)] = record_encoder(
                self.serde, output.record_name, topic
            )
        return topic, output.key, encode(output.record)

    def check(self, encoded: Encoded) -> None:
        """Raise :class:`RecordTooLarge` when the encoded record cannot be written."""
        topic, key, value = encoded
        self.producer.check(topic, key, value)

    def send(
        self, output: Output, encoded: Encoded | None = None, *, last_try: bool = False, checked: bool = False
    ) -> None:
        """Queue one output; one over the size limit becomes a rejection that names the reason.
        ``checked``: ``encoded`` has just passed :meth:`check`."""
        topic, key, value = encoded or self.encode(output)
        try:
            self.producer.produce(topic, value, key, partition=output.partition, checked=checked)
        except RecordTooLarge as exc:
            if last_try:  # even the shortest rejection does not fit: the topic's limit is absurdly low
                log.error("dropped a %s that cannot be written: %s", output.record_name, exc)
            elif output.topic == REJECTED:
                self.send(shrunk_rejection(output, str(exc)), last_try=True)
            else:
                self.send(too_large(output, exc, self.clock()), last_try=False)

    def unreadable(self, topic: str, partition: int, offset: int, data: bytes | None, reason: str) -> None:
        """Reject a message that is not an Inflow record (kept whole, hex, when it fits)."""
        self.send(unreadable(topic, partition, offset, data, reason, self.clock()))


def too_large(output: Output, exc: RecordTooLarge, at: int) -> Output:
    """The rejection of an output over its topic's size limit: what it was, whose, and the sizes."""
    record = output.record
    about = {
        name: record.get(name)
        for name in ("workspace_id", "uid", "customer_id", "event_uuid", "event_name")
        if record.get(name) is not None
    }
    value = {
        "workspace_id": str(record.get("workspace_id") or ""),
        "event_uuid": str(record.get("event_uuid") or ""),
        "record_name": output.record_name,
        "outcome": "rejected",
        "reason": f"the {output.record_name} is too large to publish: {exc}",
        "request_id": None,
        "origin": None,
        "record_json": json.dumps(about | {"size": exc.size, "limit": exc.limit}),
        "rejected_at": at,
    }
    log.warning("rejected %s: %s", output.record_name, value["reason"])
    return Output(REJECTED, output.key, "RejectedRecord", value)


def shrunk_rejection(output: Output, reason: str) -> Output:
    """A rejection whose copy of the record made it too large: the copy is replaced by its size."""
    value = dict(output.record)
    copy = str(value.get("record_json") or "")
    value["record_json"] = json.dumps({"omitted": f"record of {len(copy)} characters", "why": reason})
    return Output(output.topic, output.key, output.record_name, value)


def unreadable(topic: str, partition: int, offset: int, data: bytes | None, reason: str, at: int) -> Output:
    """A message that is not an Inflow record: kept whole (hex) in the rejected topic, with its position."""
    record: dict[str, Any] = {
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
        "rejected_at": at,
    }
    log.warning("rejected unreadable message at %s: %s", value["origin"], reason)
    return Output(REJECTED, b"", "RejectedRecord", value)
