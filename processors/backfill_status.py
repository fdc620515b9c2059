"""What ``inflow identity backfill status`` shows: the identifier backfills' progress as the workers
announce it on ``control.backfill`` (one record per workspace, identifier and partition)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from inflow.config.settings import KafkaSettings
from inflow.kafka.clients import new_admin, topic_partitions
from inflow.kafka.view import CompactedView
from inflow.processors.backfill import BACKFILL
from inflow.processors.outputs import INGEST


@dataclass(frozen=True)
class BackfillStatus:
    """One identifier of one workspace: how many partitions have finished scanning, and what they found."""

    workspace_id: str
    identifier: str
    partitions: int  # of ingest.records
    done: int  # partitions whose scan finished
    reported: int  # partitions that reported at all
    scanned: int  # profiles scanned
    claimed: int  # profiles that held a value and claimed it

    @property
    def state(self) -> str:
        return "done" if self.done >= self.partitions else "running"

    def as_json(self) -> dict[str, Any]:
        return {
            "workspace_id": self.workspace_id,
            "identifier": self.identifier,
            "state": self.state,
            "partitions": self.partitions,
            "partitions_done": self.done,
            "partitions_reported": self.reported,
            "profiles_scanned": self.scanned,
            "profiles_claimed": self.claimed,
        }


def summarize(records: list[dict[str, Any]], partitions: int) -> list[BackfillStatus]:
    """Per workspace and identifier, the latest record of each partition summed up."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["workspace_id"], record["identifier"]), []).append(record)
    return [
        BackfillStatus(
            ws,
            name,
            partitions,
            sum(1 for r in group if r["done"]),
            len(group),
            sum(int(r["scanned"]) for r in group),
            sum(int(r["claimed"]) for r in group),
        )
        for (ws, name), group in sorted(groups.items())
    ]


def read_status(kafka: KafkaSettings, timeout: float = 30.0) -> list[BackfillStatus]:
    """Read ``control.backfill`` to its end and the partition count of ``ingest.records``."""
    view = CompactedView(kafka, kafka.topic(BACKFILL), decode=json.loads, name="backfill")
    try:
        view.open(timeout).catch_up(timeout)
        records = list(view.data.values())
    finally:
        view.close()
    partitions = len(topic_partitions(new_admin(kafka), kafka.topic(INGEST)))
    return summarize(records, partitions)
