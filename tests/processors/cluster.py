"""Several partitions of ``ingest.records`` in memory: each with its own state and log, applied the way
the lane applies them (protocol messages routed to their partitions), in an order a seed chooses."""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from inflow.processors import backfill, growth, protocol
from inflow.processors.engine import LaneProcessor
from inflow.processors.outputs import Output
from inflow.processors.routing import identifier_route, partition_of
from inflow.processors.state import State
from inflow.processors.workspaces import IdentityRulesDirectory
from inflow.schemas.serde import AvroSerde
from tests.processors.conftest import WORKSPACES

SERDE = AvroSerde()


class Cluster:
    def __init__(self, partitions: int, seed: int = 0, replay: bool = False) -> None:
        """``replay``: every protocol message is delivered twice (as after a crash before its commit)."""
        self.n = partitions
        self.replay = replay
        directory = IdentityRulesDirectory(WORKSPACES)
        self.states = [State.in_memory() for _ in range(partitions)]
        self.processors = [
            LaneProcessor(state, directory, clock=lambda: 1_800_000_000_000) for state in self.states
        ]
        self.logs: list[deque[bytes]] = [deque() for _ in range(partitions)]
        self.offsets = [0] * partitions
        self.outputs: list[Output] = []
        self.messages: dict[str, int] = {}
        self.random = random.Random(seed)

    def send(self, record_name: str, record: dict[str, Any]) -> None:
        """As the gateway writes it: keyed ``W:customer_id`` (else the first identifier, else anonymous)."""
        ws = record["workspace_id"]
        ids = record.get("user_identifiers") or {}
        if record_name == "MergeRequest":  # the management requests: keyed by their user's route
            key = f"{ws}:{record['merged_user']}"
        elif record_name == "DeviceOptOut":
            key = identifier_route(ws, record["user_identifier_type"], record["user_identifier_value"])
        elif record.get("customer_id"):
            key = f"{ws}:{record['customer_id']}"
        elif ids:
            name, value = next(iter(ids.items()))
            key = f"{ws}:{name}={value}"
        else:
            key = f"{ws}:anonymous_id={record.get('anonymous_id')}"
        self.logs[partition_of(key, self.n)].append(SERDE.encode(record_name, record))

    def step(self, partition: int) -> None:
        data = self.logs[partition].popleft()
        offset = self.offsets[partition]
        self.offsets[partition] += 1
        processor = self.processors[partition]
        processor.at(partition, self.n)
        position = [partition, offset, 0]
        outputs: list[Output]
        if protocol.is_protocol(data):
            message = protocol.decode(data)
            self.messages[message.kind] = self.messages.get(message.kind, 0) + 1
            if message.kind == protocol.FORWARD:
                name, record = SERDE.decode(message.payload)
                outputs = processor.process(name, record, position, message.payload, message.header["slot"])
            elif message.kind == protocol.MOVE:  # as the lane applies it (processors.lane)
                if growth.on_move(self.states[partition], partition, message.header, message.payload):
                    backfill.scan_again(self.states[partition], partition)
                outputs = []
            elif message.kind == protocol.MARK:
                growth.on_mark(self.states[partition], partition, message.header)
                outputs = []
            else:
                outputs = processor.on_message(message)
        else:
            name, record = SERDE.decode(data)
            outputs = processor.process(name, record, position, data)
        self.states[partition].flush()
        for output in outputs:
            if output.raw is not None:
                assert output.partition is not None
                self.logs[output.partition].append(output.raw)
                if self.replay:
                    self.logs[output.partition].append(output.raw)
            else:
                self.outputs.append(output)

    def run(self, limit: int = 100_000) -> None:
        """Until every log is drained, taking the next message from a partition the seed picks."""
        for _ in range(limit):
            busy = [p for p in range(self.n) if self.logs[p]]
            if not busy:
                return
            self.step(self.random.choice(busy))
        raise AssertionError("the cluster did not settle")

    def latest_profiles(self) -> dict[str, dict[str, Any]]:
        latest: dict[str, dict[str, Any]] = {}
        for o in self.outputs:
            if o.topic == "profiles" and not o.tombstone:
                uid = o.record["uid"]
                if uid not in latest or o.record["revision"] >= latest[uid]["revision"]:
                    latest[uid] = o.record
        return latest

    def live_users(self) -> dict[str, dict[str, Any]]:
        """uid -> latest snapshot, for users not merged into another."""
        return {uid: p for uid, p in self.latest_profiles().items() if p["merged_into"] is None}

    def erased(self) -> set[str]:
        """Profile keys tombstoned (Delete User)."""
        return {o.key.decode() for o in self.outputs if o.topic == "profiles" and o.tombstone}

    def events(self) -> list[dict[str, Any]]:
        return [o.record for o in self.outputs if o.topic == "events"]


def grow(cluster: Cluster, partitions: int) -> None:
    """What ``inflow topics grow`` and the lanes do: new partitions that know they were born by the growth,
    and every partition's layout checked (old ones move their keys and MARK every partition)."""
    layout = {"partitions": partitions, "previous": cluster.n}
    for _ in range(partitions - cluster.n):
        cluster.states.append(State.in_memory())
        cluster.processors.append(
            LaneProcessor(
                cluster.states[-1], cluster.processors[0].directory, clock=lambda: 1_800_000_000_000
            )
        )
        cluster.logs.append(deque())
        cluster.offsets.append(0)
    cluster.n = partitions
    for partition, state in enumerate(cluster.states):
        for output in growth.check_layout(state, partition, partitions, layout):
            assert output.raw is not None and output.partition is not None
            cluster.logs[output.partition].append(output.raw)
        state.flush()
