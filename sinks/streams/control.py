"""Stream definitions and pause state kept in compacted control topics, read by every sink and the CLI.

``control.streams`` holds definitions added with ``inflow streams add`` (secrets encrypted);
``control.stream-state`` holds pause/resume (StreamState). YAML definitions win over stored ones with
the same id; the CLI refuses to add such an id.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message

from inflow.config.settings import KafkaSettings
from inflow.errors import InflowError
from inflow.kafka.producer import KafkaProducer
from inflow.kafka.view import CompactedView
from inflow.schemas.serde import AvroSerde
from inflow.sinks.streams.definitions import StreamDefinition, parse_definition

log = logging.getLogger(__name__)
DEFINITIONS_TOPIC = "control.streams"
STATE_TOPIC = "control.stream-state"
FOREVER_MS = 2**63 - 1


@dataclass(frozen=True, slots=True)
class PauseView:
    """What a worker does now: paused or not, and the arrival window (ms) to skip after a skip-mode pause."""

    paused: bool
    mode: str
    skip_window: tuple[int, int] | None = None


def pause_view(definition: StreamDefinition, state: Mapping[str, Any] | None) -> PauseView:
    """Combine the definition's own flag with the live state record."""
    if definition.paused:
        return PauseView(True, definition.pause_mode)
    if state is None:
        return PauseView(False, definition.pause_mode)
    mode = str(state.get("mode") or definition.pause_mode)
    paused_at = state.get("paused_at")
    if state["paused"]:
        # Records fetched before the pause took hold are held; skip mode drops those that arrived since.
        window = (_ms(paused_at), FOREVER_MS) if mode == "skip" and paused_at is not None else None
        return PauseView(True, mode, window)
    if mode == "skip" and paused_at is not None:
        return PauseView(False, mode, (_ms(paused_at), _ms(state["changed_at"])))
    return PauseView(False, mode)


def _ms(value: datetime | int) -> int:
    return value if isinstance(value, int) else int(value.timestamp() * 1000)


@dataclass
class ControlView:
    """Definitions (YAML and stored) and pause states as last read from the control topics."""

    yaml: dict[str, StreamDefinition] = field(default_factory=dict)
    stored: dict[str, StreamDefinition] = field(default_factory=dict)
    stored_raw: dict[str, dict[str, Any]] = field(default_factory=dict)
    states: dict[str, dict[str, Any]] = field(default_factory=dict)

    def definitions(self) -> dict[str, StreamDefinition]:
        return {**self.stored, **self.yaml}

    def apply(self, msg: Message, serde: AvroSerde, prefix: str) -> None:
        """Fold one control record in; a bad record is logged with its position and skipped."""
        value = msg.value()
        if value is None:
            return
        try:
            if msg.topic() == f"{prefix}.{DEFINITIONS_TOPIC}":
                _, record = serde.decode(value, expected="StreamDefinition")
                self._apply_definition(record)
            else:
                _, record = serde.decode(value, expected="StreamState")
                self.states[record["stream_id"]] = record
        except (InflowError, ValueError) as exc:
            log.error(
                "skipping control record %s[%s]@%s: %s", msg.topic(), msg.partition(), msg.offset(), exc
            )

    def _apply_definition(self, record: dict[str, Any]) -> None:
        stream_id = record["stream_id"]
        if record["deleted"]:
            self.stored.pop(stream_id, None)
            self.stored_raw.pop(stream_id, None)
            return
        data = json.loads(record["definition_json"])
        self.stored[stream_id] = parse_definition(data, f"{DEFINITIONS_TOPIC}[{stream_id}]")
        self.stored_raw[stream_id] = data


def control_view(
    kafka: KafkaSettings,
    serde: AvroSerde,
    view: ControlView,
    apply: Callable[[Message], None] | None = None,
) -> CompactedView:
    """Both control topics from their beginning, each record folded into ``view`` (nothing committed), or
    handed to ``apply`` instead (a sink folds them on its event loop).

    ``open()`` + ``catch_up()`` read them to their current end (the CLI, a sink's start); ``pump()`` then
    follows them (a running sink)."""
    prefix = kafka.topic_prefix
    return CompactedView(
        kafka,
        [kafka.topic(DEFINITIONS_TOPIC), kafka.topic(STATE_TOPIC)],
        apply=apply or (lambda msg: view.apply(msg, serde, prefix)),
        name="streams-control",
    )


def read_control(
    kafka: KafkaSettings, serde: AvroSerde, view: ControlView, timeout: float = 30.0
) -> ControlView:
    """Read both control topics to their current end into ``view`` (for the CLI and the tests)."""
    reader = control_view(kafka, serde, view)
    try:
        reader.open(timeout).catch_up(timeout)
    finally:
        reader.close()
    return view


def publish(kafka: KafkaSettings, short_topic: str, key: str, value: bytes) -> None:
    """Write one control record and wait for the broker's acknowledgement (a typed KafkaFault if not)."""
    no_linger: dict[str, Any] = {"linger.ms": 0}
    producer = KafkaProducer(kafka, name="streams-control", **no_linger)
    try:
        producer.publish_and_wait(kafka.topic(short_topic), key.encode(), value)
    finally:
        producer.close()


def definition_record(stream_id: str, stored: dict[str, Any] | None) -> dict[str, Any]:
    """A StreamDefinition record; ``stored`` None marks the id deleted."""
    return {
        "stream_id": stream_id,
        "definition_json": json.dumps(stored or {}, sort_keys=True),
        "deleted": stored is None,
        "updated_at": datetime.now(UTC),
    }


def state_record(
    stream_id: str, paused: bool, mode: str, paused_at: datetime | None, offsets: dict[str, int] | None = None
) -> dict[str, Any]:
    return {
        "stream_id": stream_id,
        "paused": paused,
        "mode": mode,
        "changed_at": datetime.now(UTC),
        "paused_offsets_json": json.dumps(offsets) if offsets is not None else None,
        "paused_at": paused_at,
    }
