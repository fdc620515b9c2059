"""Import definitions, durable in the compacted ``control.imports`` topic (key: import name).

Every poller and CLI call reads the topic to its end (a :class:`CompactedView`) to know the current
definitions, and reads its own writes back; secrets inside are encrypted with the secret box, so the topic
never holds them in clear.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message

from inflow.config.secrets import SecretBox
from inflow.config.settings import KafkaSettings
from inflow.kafka.errors import KafkaFault, Kind
from inflow.kafka.producer import KafkaProducer
from inflow.kafka.view import CompactedView
from inflow.producers.s3_import.definition import (
    IdentifiersOf,
    ImportDefinition,
    check_not_duplicate,
    from_stored,
    identity_identifier,
    to_stored,
    with_created_at,
)
from inflow.producers.s3_import.exceptions import DefinitionError, S3ImportError
from inflow.schemas.serde import AvroSerde
from inflow.workspaces.exceptions import WorkspaceError
from inflow.workspaces.registry import WorkspaceRegistry

NO_LINGER: dict[str, Any] = {"linger.ms": 0}  # control records are written one at a time


def read_identifiers(kafka: KafkaSettings, serde: AvroSerde, workspace_id: str) -> tuple[str, ...] | None:
    """A workspace's identifiers as ``control.workspaces`` holds them now (customer_id first); None when
    the topic does not know the workspace."""
    registry = WorkspaceRegistry(kafka, serde)
    try:
        workspace = registry.load().get(workspace_id)
    except WorkspaceError as exc:
        reason = f"the identifiers of workspace {workspace_id} cannot be read: {exc}"
        raise DefinitionError(reason) from exc
    finally:
        registry.stop()
    return None if workspace is None else ("customer_id", *workspace.identifiers)


class DefinitionStore:
    """Reads and writes import definitions; ``refresh()`` picks up changes made by other processes."""

    def __init__(
        self,
        kafka: KafkaSettings,
        serde: AvroSerde,
        box: SecretBox,
        identifiers_of: IdentifiersOf | None = None,
    ) -> None:
        """``identifiers_of(workspace_id)``: the workspace's identifiers (None: unknown), asked for a
        definition whose identity column is an identifier; default: ``control.workspaces`` read then."""
        self.kafka = kafka
        self.identifiers_of = identifiers_of or self._read_identifiers
        self.topic = kafka.topic("control.imports")
        self._serde = serde
        self._box = box
        self._encode = serde.encoder("ImportDefinition", topic=self.topic)
        self.definitions: dict[str, ImportDefinition] = {}
        self.errors: dict[str, str] = {}
        self._producer = KafkaProducer(kafka, name="import-definitions", **NO_LINGER)
        self._view = CompactedView(kafka, self.topic, apply=self._apply, name="import-definitions")
        try:
            self._view.open()
            self.load()
        except BaseException:
            self.close()
            raise

    def load(self, timeout: float = 30.0) -> None:
        """Read every partition to its current end."""
        self._view.catch_up(timeout)

    def refresh(self) -> None:
        """Apply records written since the last read, without blocking."""
        self._view.pump(0)

    def _apply(self, msg: Message) -> None:
        raw_key, value = msg.key(), msg.value()
        name = raw_key.decode() if raw_key else ""
        if value is None:
            self.definitions.pop(name, None)
            return
        _, record = self._serde.decode(value, expected="ImportDefinition")
        try:
            data = json.loads(record["definition_json"])
            data["archived"] = record["archived"]
            data["created_at"] = record["created_at"].isoformat()
            self.definitions[name] = from_stored(data, self._box)
            self.errors.pop(name, None)
        except Exception as exc:  # a definition that no longer validates is reported, never fatal
            self.errors[name] = f"{type(exc).__name__}: {exc}"

    def put(self, definition: ImportDefinition, *, replace: bool = False) -> ImportDefinition:
        """Add (or with ``replace`` update) a definition after the duplicate check; returns it as stored."""
        self.refresh()
        existing = self.definitions.get(definition.name)
        if existing is not None and not replace:
            raise DefinitionError(
                f"An import with the same import name has already been used: {definition.name}"
            )
        check_not_duplicate(definition, self.definitions.values())
        if definition.identity is not None:
            identity_identifier(definition, self.identifiers_of(definition.workspace_id))
        now = datetime.now(UTC)
        created = existing.created_at if existing and existing.created_at else now
        stored = with_created_at(definition.model_copy(update={"created_at": created}), now)
        self._write(stored, now)
        return stored

    def _read_identifiers(self, workspace_id: str) -> tuple[str, ...] | None:
        """A workspace's identifiers as ``control.workspaces`` holds them now (customer_id first)."""
        try:
            workspace = WorkspaceRegistry(self.kafka, self._serde).load().get(workspace_id)
        except WorkspaceError as exc:
            raise DefinitionError(
                f"the identifiers of workspace {workspace_id} cannot be read: {exc}"
            ) from exc
        return None if workspace is None else ("customer_id", *workspace.identifiers)

    def archive(self, name: str) -> ImportDefinition:
        """Stop future runs; a running file finishes (as in MoEngage, a running import can't be stopped
        midway)."""
        self.refresh()
        existing = self.get(name)
        archived = existing.model_copy(update={"archived": True})
        self._write(archived, datetime.now(UTC))
        return archived

    def get(self, name: str) -> ImportDefinition:
        try:
            return self.definitions[name]
        except KeyError:
            raise DefinitionError(f"no import named {name!r}") from None

    def _write(self, d: ImportDefinition, now: datetime) -> None:
        data = to_stored(d, self._box)
        for key in ("archived", "created_at"):
            data.pop(key, None)
        record = {
            "name": d.name,
            "workspace_id": d.workspace_id,
            "definition_json": json.dumps(data, sort_keys=True),
            "archived": d.archived,
            "created_at": d.created_at or now,
            "updated_at": now,
        }
        try:
            msg = self._producer.publish_and_wait(self.topic, d.name.encode(), self._encode(record))
            # Read our own write back, so that the local view is exactly the topic's (no stale overwrite).
            self._view.read_until(self.topic, msg.partition() or 0, msg.offset() or 0)
        except KafkaFault as exc:
            if exc.kind is Kind.FATAL:
                raise
            raise S3ImportError(f"writing import {d.name} to {self.topic} failed: {exc}") from exc

    def close(self) -> None:
        self._view.close()
        self._producer.close()
