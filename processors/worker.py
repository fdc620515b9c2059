"""One processors worker: the lane stage over ``ingest.records``, and the progress log.

The consumer group ``<prefix>.processors`` shares the partitions of ``ingest.records`` (keyed by user,
see :mod:`~inflow.processors.routing`) and their state among the workers; one workspace's load spreads
over every partition and every worker. SIGTERM or SIGINT ends the loop after the current batch (flushed
and committed); a failure stops the worker with the reason.

Earlier versions had a router stage that re-keyed three ingest topics by workspace onto a lane topic: it
lost the order between a request's users and events and kept each workspace on one worker. Records now
arrive in one topic in the order they were written and are applied where they land.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from inflow.config.settings import KafkaSettings
from inflow.config.topics import TopicSpec
from inflow.kafka.clients import new_admin
from inflow.kafka.producer import KafkaProducer
from inflow.processors.backfill import BACKFILL, Backfill
from inflow.processors.changelog import ChangelogRestorer, changelog_specs
from inflow.processors.engine import LaneProcessor, enriched_events
from inflow.processors.fair_usage import FairUsage, Policy
from inflow.processors.growth import LayoutOf
from inflow.processors.lane import LaneAgent
from inflow.processors.outputs import AUDIT, EVENTS, INGEST, OUTCOMES, PROFILES, REJECTED
from inflow.processors.publishing import Publisher
from inflow.processors.settings import WorkerSettings
from inflow.processors.state import JsonTable, MarkTable, State
from inflow.processors.store import SEEN, LaneStores
from inflow.processors.workspaces import IdentityRulesDirectory
from inflow.schemas.serde import AvroSerde

log = logging.getLogger(__name__)
INGEST_TOPICS = (INGEST,)
LAYOUT_TOPIC = "control.layout"


def app_id(kafka: KafkaSettings) -> str:
    """The group's id and the prefix of the changelog topics: ``<prefix>.processors``."""
    return f"{kafka.topic_prefix}.processors"


class ProcessorsWorker:
    """The lane agent of one worker process, and the progress log."""

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: WorkerSettings,
        directory: IdentityRulesDirectory,
        catalogue: dict[str, TopicSpec],
        data_dir: Path,
        disabled: Callable[[str], bool] = lambda workspace_id: False,
        layout: LayoutOf = lambda: None,
        partitions: int | None = None,
        workspace_ids: Callable[[], Iterable[str]] = tuple,
        fair_usage: Mapping[str, Policy | None] | None = None,
    ) -> None:
        """``disabled(workspace_id)``: whether ``inflow workspaces disable`` stopped the workspace;
        ``partitions``: of ingest.records on the broker (its changelogs are created with as many);
        ``workspace_ids()``: every workspace known now (whose identifiers the backfill follows);
        ``fair_usage``: the Fair Usage policies of the workspaces the file declares (others: MoEngage's)."""
        self.settings = settings
        group = app_id(kafka)
        ingest = catalogue[INGEST]
        self.changelog_specs = changelog_specs(group, ingest, settings.dedup_window_s, partitions)
        serde = AvroSerde(kafka.schema_registry_url)
        outputs = (INGEST, PROFILES, EVENTS, REJECTED, OUTCOMES, AUDIT, BACKFILL)
        topic_names = {short: catalogue[short].name for short in outputs}
        stores = LaneStores(
            data_dir / "state",
            settings.rocksdb_write_buffer_bytes,
            settings.rocksdb_block_cache_bytes,
            settings.dedup_window_s,
        )
        # Seen marks are read once per record and rarely again: a small cache, and their own table class.
        limit = settings.cache_limit
        identity, users, devices, device_index = (JsonTable(view, limit) for view in stores.views[:SEEN])
        seen = MarkTable(stores.views[SEEN], max(1, settings.cache_limit // 10))
        state = State(identity, users, devices, device_index, seen)
        usage = FairUsage(state, fair_usage, max_users=settings.fair_usage_tracked_users)
        processor = LaneProcessor(
            state,
            directory,
            disabled=disabled,
            max_profile_bytes=settings.max_profile_bytes,
            max_profile_attributes=settings.max_profile_attributes,
            fair_usage=usage if settings.fair_usage else None,
            enriched_events=enriched_events(serde, topic_names[EVENTS]),
        )
        producing: dict[str, Any] = {"linger.ms": settings.linger_ms, "batch.size": settings.max_batch_size}
        self.lane = LaneAgent(
            kafka,
            settings,
            group,
            ingest.name,
            [spec.name for spec in self.changelog_specs],
            processor,
            stores,
            ChangelogRestorer(kafka, group),
            Publisher(
                KafkaProducer(
                    kafka,
                    name="lanes",
                    successes=False,
                    batch_topics=[topic_names[short] for short in (INGEST, PROFILES, EVENTS, REJECTED)],
                    **producing,
                ),
                serde,
                topic_names,
                processor.clock,
            ),
            serde,
            layout=layout,
            metadata=new_admin(kafka),
            layout_topic=kafka.topic(LAYOUT_TOPIC),
            changelog_producer=KafkaProducer(kafka, name="changelogs", **producing),
        )
        self.lane.backfill = Backfill(
            processor, workspace_ids, settings.backfill_batch, settings.backfill_step_interval_s
        )
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    def running(self) -> bool:
        return not self._stop.is_set()

    async def run(self) -> None:
        """Until SIGTERM / SIGINT (or the lane stage fails, which is raised)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        progress = asyncio.create_task(self._progress(), name="progress")
        try:
            await self.lane.run(self.running)
        finally:
            progress.cancel()
            self.lane.publisher.producer.close()
            self.lane.producer.close()

    async def _progress(self) -> None:
        """What moved since the last line: records applied per partition, and why not."""
        while True:
            await asyncio.sleep(self.settings.progress_log_s)
            log.info(
                "progress: applied %s, partitions %s, restoring %s, merges %d, stage %s",
                dict(sorted(self.lane.applied.items())),
                self.lane.owned_lanes(),
                self.lane.restorer.restoring,
                self.lane.processor.merges,
                self.lane.stage,
            )
            self.lane.applied.clear()
