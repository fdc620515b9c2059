"""One processors worker: the router and the lane stage, wired together and run on one event loop.

Two consumer groups per topic prefix: ``<prefix>.processors.router`` reads the ingest topics and forwards
every record to ``processors.lanes`` keyed by workspace (:mod:`~inflow.processors.router`), and
``<prefix>.processors`` owns the lane partitions and their state (:mod:`~inflow.processors.lane`). Each stage
has its own producer, flushed before the stage commits. SIGTERM or SIGINT ends both loops after their
current batch (flushed and committed); a stage that fails stops the worker with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inflow.config.settings import KafkaSettings
from inflow.config.topics import TopicSpec
from inflow.kafka.producer import KafkaProducer
from inflow.processors.changelog import ChangelogRestorer, changelog_specs
from inflow.processors.engine import LaneProcessor
from inflow.processors.lane import LaneAgent
from inflow.processors.outputs import EVENTS, PROFILES, REJECTED
from inflow.processors.publishing import Publisher
from inflow.processors.router import Router
from inflow.processors.settings import WorkerSettings
from inflow.processors.state import JsonTable, State
from inflow.processors.store import SEEN, LaneStores
from inflow.processors.workspaces import IdentityRulesDirectory
from inflow.schemas.serde import AvroSerde

log = logging.getLogger(__name__)
INGEST_TOPICS = ("ingest.users", "ingest.devices", "ingest.events")
LANES = "processors.lanes"


def app_id(kafka: KafkaSettings) -> str:
    """The lane group's id and the prefix of the changelog topics: ``<prefix>.processors``."""
    return f"{kafka.topic_prefix}.processors"


class ProcessorsWorker:
    """The router and the lane agent of one worker process, and the progress log."""

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: WorkerSettings,
        directory: IdentityRulesDirectory,
        catalogue: dict[str, TopicSpec],
        data_dir: Path,
        disabled: Callable[[str], bool] = lambda workspace_id: False,
    ) -> None:
        """``disabled(workspace_id)``: whether ``inflow workspaces disable`` stopped the workspace."""
        self.settings = settings
        group = app_id(kafka)
        lanes = catalogue[LANES]
        self.changelog_specs = changelog_specs(group, lanes, settings.dedup_window_s)
        serde = AvroSerde(kafka.schema_registry_url)
        topic_names = {short: catalogue[short].name for short in (PROFILES, EVENTS, REJECTED)}
        stores = LaneStores(
            data_dir / "state",
            settings.rocksdb_write_buffer_bytes,
            settings.rocksdb_block_cache_bytes,
            settings.dedup_window_s,
        )
        # Seen marks are read once per record and rarely again: a small cache.
        limits = [settings.cache_limit] * len(stores.views)
        limits[SEEN] = max(1, settings.cache_limit // 10)
        state = State(*(JsonTable(view, limit) for view, limit in zip(stores.views, limits, strict=True)))
        processor = LaneProcessor(state, directory, disabled=disabled)
        # murmur2 like Java's default partitioner: a workspace keeps the lane it always had.
        producing: dict[str, Any] = {
            "linger.ms": settings.linger_ms,
            "batch.size": settings.max_batch_size,
            "partitioner": "murmur2_random",
        }
        self.router = Router(
            kafka,
            f"{group}.router",
            Publisher(KafkaProducer(kafka, name="router", **producing), serde, topic_names, processor.clock),
            [catalogue[name].name for name in INGEST_TOPICS],
            lanes.name,
            settings.batch_size,
            settings.batch_within_s,
            settings.session_timeout_s,
        )
        self.lane = LaneAgent(
            kafka,
            settings,
            group,
            lanes.name,
            [spec.name for spec in self.changelog_specs],
            processor,
            stores,
            ChangelogRestorer(kafka, group),
            Publisher(KafkaProducer(kafka, name="lanes", **producing), serde, topic_names, processor.clock),
            serde,
        )
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    def running(self) -> bool:
        return not self._stop.is_set()

    async def run(self) -> None:
        """Until SIGTERM / SIGINT (or a stage fails, which is raised)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        stages = [
            asyncio.create_task(self.router.run(self.running), name="router"),
            asyncio.create_task(self.lane.run(self.running), name="lanes"),
        ]
        progress = asyncio.create_task(self._progress(), name="progress")
        try:
            await asyncio.wait(stages, return_when=asyncio.FIRST_EXCEPTION)
            self.stop()  # one stage ended (stopped or failed): end the other after its batch
            for result in await asyncio.gather(*stages, return_exceptions=True):
                if isinstance(result, BaseException):
                    raise result
        finally:
            progress.cancel()
            for producer in (self.router.producer, self.lane.producer):
                producer.close()

    async def _progress(self) -> None:
        """What moved since the last line: records routed, applied per lane partition, and why not."""
        while True:
            await asyncio.sleep(self.settings.progress_log_s)
            log.info(
                "progress: routed %d (router owns %d ingest partitions), applied %s, lanes %s, "
                "restoring %s, lane stage %s",
                self.router.forwarded,
                self.router.owned_partitions(),
                dict(sorted(self.lane.applied.items())),
                self.lane.owned_lanes(),
                self.lane.restorer.restoring,
                self.lane.stage,
            )
            self.router.forwarded = 0
            self.lane.applied.clear()
