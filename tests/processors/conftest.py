"""A lane processor over in-memory state, fed through the real Avro serde like the worker does."""

from __future__ import annotations

import json
from typing import Any

import pytest

from inflow.config.file import WorkspaceConfig
from inflow.processors.engine import LaneProcessor
from inflow.processors.outputs import Output
from inflow.processors.state import State
from inflow.processors.workspaces import IdentityRulesDirectory
from inflow.schemas.avro_template import record_encoder
from inflow.schemas.serde import AvroSerde

WORKSPACES = [
    WorkspaceConfig(
        id="W",
        identifiers=["customer_id", "email", "moe_mobile"],
        identifier_exceptions={"email": ["test@example.com"]},
    ),
    WorkspaceConfig(id="P", identifiers=["customer_id", "email"], merge_priority_attribute="loyalty_id"),
]


class Lane:
    """Processes records like the lane stage (decode, process, encode outputs, flush) and keeps results."""

    def __init__(self) -> None:
        self.serde = AvroSerde()
        self.state = State.in_memory()
        self.processor = LaneProcessor(
            self.state, IdentityRulesDirectory(WORKSPACES), clock=lambda: 1_800_000_000_000
        )
        self.outputs: list[Output] = []

    def feed(self, record_name: str, record: dict[str, Any]) -> list[Output]:
        name, decoded = self.serde.decode(self.serde.encode(record_name, record))
        outputs = self.processor.process(name, decoded)
        for output in outputs:  # every output is a valid record, and the worker's compiled encoder agrees
            expected = self.serde.encode(output.record_name, output.record)
            assert record_encoder(self.serde, output.record_name)(output.record) == expected
        self.state.flush()
        self.outputs += outputs
        return outputs

    def profile(self, ws: str, uid: str) -> dict[str, Any]:
        """The latest published snapshot of a user."""
        snaps = [o.record for o in self.outputs if o.topic == "profiles" and o.record["uid"] == uid]
        assert snaps, f"no snapshot of {uid}"
        return snaps[-1]

    def uid_of(self, outputs: list[Output]) -> str:
        return next(o.record["uid"] for o in outputs if o.topic in ("profiles", "events"))

    def events(self, outputs: list[Output] | None = None) -> list[dict[str, Any]]:
        return [o.record for o in (self.outputs if outputs is None else outputs) if o.topic == "events"]

    def rejected(self, outputs: list[Output]) -> list[dict[str, Any]]:
        return [o.record for o in outputs if o.topic == "processors.rejected"]


@pytest.fixture
def lane() -> Lane:
    return Lane()


def attrs(snapshot: dict[str, Any]) -> dict[str, Any]:
    return json.loads(snapshot["attributes_json"])


@pytest.fixture
def worker_topics(catalogue_topics, admin):
    """The catalogue under this test's prefix; afterwards every topic of the prefix (changelogs included) is
    deleted, so worker tests do not pile partitions (and open files) onto a shared broker."""
    yield catalogue_topics
    prefix = catalogue_topics.topic_prefix + "."
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.exception()  # wait; a topic already gone is fine
