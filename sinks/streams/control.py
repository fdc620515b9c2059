"""Stream definitions and pause state kept in compacted control topics, read by every sink and the CLI.

``control.streams`` holds definitions added with ``inflow streams add`` (secrets encrypted);
``control.stream-state`` holds pause/resume (StreamState). YAML definitions win over stored ones with
the same id; the CLI refuses to add such an id. ``control.workspaces`` is followed too: the streams of a
disabled workspace are held until it is enabled again.

A stored definition that cannot be read (refused by the model, say a header with CR/LF written before such
values were refused) is kept as *invalid* with its reason: that stream is held, every other one runs. A
record that cannot be decoded because the schema registry is unreachable is kept and applied again later
(:meth:`ControlView.retry_unresolved`), never dropped.
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
from inflow.schemas.exceptions import RegistryError
from inflow.schemas.serde import AvroSerde
from inflow.sinks.streams.definitions import StreamDefinition, parse_definition
from inflow.sinks.streams.exceptions import StreamDefinitionError

log = logging.getLogger(__name__)
DEFINITIONS_TOPIC = "control.streams"
STATE_TOPIC = "control.stream-state"
WORKSPACES_TOPIC = "control.workspaces"  # written by `inflow workspaces`; the sink reads `disabled`
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
    invalid: dict[str, str] = field(default_factory=dict)  # stored stream id -> why it cannot be read
    disabled_workspaces: set[str] = field(default_factory=set)
    unresolved: dict[tuple[str, bytes], Message] = field(default_factory=dict)  # registry unreachable

    def definitions(self) -> dict[str, StreamDefinition]:
        return {**self.stored, **self.yaml}

    def invalid_stored(self) -> dict[str, str]:
        """Stored definitions that cannot be read (and no YAML definition replaces), with the reason."""
        return {k: v for k, v in self.invalid.items() if k not in self.yaml}

    def apply(self, msg: Message, serde: AvroSerde, prefix: str) -> None:
        """Fold one control record in; a bad record is logged with its position and skipped (a bad
        definition holds its stream); one the registry could not resolve yet is kept for later."""
        value = msg.value()
        topic = str(msg.topic())
        key = msg.key() or b""
        self.unresolved.pop((topic, key), None)  # a newer record of the key replaces an unresolved one
        try:
            if topic == f"{prefix}.{WORKSPACES_TOPIC}":
                self._apply_workspace(key, value, serde)
            elif value is None:
                return
            elif topic == f"{prefix}.{DEFINITIONS_TOPIC}":
                try:
                    _, record = serde.decode(value, expected="StreamDefinition")
                except RegistryError as exc:
                    if exc.retriable:
                        raise
                    self._unreadable_definition(key, exc)
                    return
                except InflowError as exc:
                    self._unreadable_definition(key, exc)
                    return
                self._apply_definition(record)
            else:
                _, record = serde.decode(value, expected="StreamState")
                self.states[record["stream_id"]] = record
        except RegistryError as exc:
            if exc.retriable:
                self.unresolved[(topic, key)] = msg
                log.warning(
                    "control record %s[%s]@%s kept for later: %s", topic, msg.partition(), msg.offset(), exc
                )
            else:
                log.error("skipping control record %s[%s]@%s: %s", topic, msg.partition(), msg.offset(), exc)
        except (InflowError, ValueError) as exc:
            log.error("skipping control record %s[%s]@%s: %s", topic, msg.partition(), msg.offset(), exc)

    def retry_unresolved(self, serde: AvroSerde, prefix: str) -> None:
        """Apply again the records the schema registry could not resolve (it may be back)."""
        for msg in list(self.unresolved.values()):
            self.apply(msg, serde, prefix)

    def _apply_workspace(self, key: bytes, value: bytes | None, serde: AvroSerde) -> None:
        if value is None:
            self.disabled_workspaces.discard(key.decode())
            return
        _, record = serde.decode(value, expected="WorkspaceCredential")
        if record["disabled"]:
            self.disabled_workspaces.add(record["workspace_id"])
        else:
            self.disabled_workspaces.discard(record["workspace_id"])

    def _unreadable_definition(self, key: bytes, exc: Exception) -> None:
        stream_id = key.decode("utf-8", "replace")
        self.stored.pop(stream_id, None)
        self.stored_raw.pop(stream_id, None)
        self.invalid[stream_id] = f"{DEFINITIONS_TOPIC}[{stream_id}]: record cannot be decoded: {exc}"

    def _apply_definition(self, record: dict[str, Any]) -> None:
        stream_id = record["stream_id"]
        self.invalid.pop(stream_id, None)
        if record["deleted"]:
            self.stored.pop(stream_id, None)
            self.stored_raw.pop(stream_id, None)
            return
        try:
            data = json.loads(record["definition_json"])
            definition = parse_definition(data, f"{DEFINITIONS_TOPIC}[{stream_id}]")
        except (ValueError, StreamDefinitionError) as exc:
            # The old definition must not keep running: the stream is held with the reason.
            self.stored.pop(stream_id, None)
            self.stored_raw.pop(stream_id, None)
            self.invalid[stream_id] = str(exc)
            log.error("stream %s: stored definition refused, stream held: %s", stream_id, exc)
            return
        self.stored[stream_id] = definition
        self.stored_raw[stream_id] = data


def control_view(
    kafka: KafkaSettings,
    serde: AvroSerde,
    view: ControlView,
    apply: Callable[[Message], None] | None = None,
) -> CompactedView:
    """The control topics (definitions, states, workspaces) from their beginning, each record folded into
    ``view`` (nothing committed), or handed to ``apply`` instead (a sink folds them on its event loop).

    ``open()`` + ``catch_up()`` read them to their current end (the CLI, a sink's start); ``pump()`` then
    follows them (a running sink)."""
    prefix = kafka.topic_prefix
    return CompactedView(
        kafka,
        [kafka.topic(DEFINITIONS_TOPIC), kafka.topic(STATE_TOPIC), kafka.topic(WORKSPACES_TOPIC)],
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
