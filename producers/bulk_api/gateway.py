"""The gateway's parts wired together: views, authenticator, validator, rate limiter and producer.

Three compacted topics are followed by :class:`~inflow.kafka.view.CompactedView`: workspace
credentials (:class:`~inflow.workspaces.registry.WorkspaceRegistry`), the rate-limit counts every gateway
publishes, and the profile store of Get User (kept on disk, not in memory: see ``profiles.py``). Records
go out through one :class:`~inflow.kafka.producer.KafkaProducer`
(:class:`~inflow.producers.bulk_api.delivery.GatewayDelivery`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from inflow.config.file import WorkspaceConfig
from inflow.config.settings import KafkaSettings
from inflow.kafka.view import CompactedView
from inflow.producers.bulk_api import ratelimit
from inflow.producers.bulk_api.auth import Authenticator
from inflow.producers.bulk_api.delivery import GatewayDelivery
from inflow.producers.bulk_api.elements import ElementValidator, Encoders
from inflow.producers.bulk_api.management import RequestRecords
from inflow.producers.bulk_api.metrics import GatewayMetrics
from inflow.producers.bulk_api.profiles import ProfileStore
from inflow.producers.bulk_api.ratelimit import RateLimiter
from inflow.producers.bulk_api.settings import GatewaySettings
from inflow.schemas.serde import AvroSerde
from inflow.workspaces.registry import WorkspaceRegistry

log = logging.getLogger(__name__)
INGEST_TOPICS = ("ingest.records",)


@dataclass
class Gateway:
    """Everything a request handler needs; ``start`` begins following the control topics."""

    kafka: KafkaSettings
    settings: GatewaySettings
    seed_workspaces: list[WorkspaceConfig] = field(default_factory=list)
    gateway_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __post_init__(self) -> None:
        self.serde = AvroSerde(self.kafka.schema_registry_url)
        self.metrics = GatewayMetrics()
        self.delivery = GatewayDelivery(self.kafka, self.settings.delivery_timeout_ms, self.serde)
        topic = self.kafka.topic
        self.validator = ElementValidator(self.settings, Encoders.spliced(self.serde, topic))
        self.requests = RequestRecords(self.serde)
        self.directory = WorkspaceRegistry(self.kafka, self.serde)
        self.auth = Authenticator(self.directory, self.settings.failed_logins_per_minute)
        self.limiter = RateLimiter(
            self.gateway_id,
            self.settings.rate_window_s,
            self.serde,
            lambda key, value: self.delivery.send(ratelimit.TOPIC, key, value),
        )
        observe = self.limiter.observe
        self.rates = CompactedView(
            self.kafka,
            topic(ratelimit.TOPIC),
            apply=lambda msg: observe(msg.key(), msg.value()),
            name="rates",
        )
        self.profiles = ProfileStore(
            self.kafka, self.serde, self.settings.profile_store_dir, self.settings.profile_cache_mb
        )

    def start(self, ready_timeout: float = 60.0) -> None:
        """Follow the control topics; create the config file's workspaces once the credentials are read."""
        self.profiles.start(self.gateway_id)  # first: the longest to read, and it reports a missing topic
        self.directory.start()
        self.rates.start()
        self.delivery.prepare((*INGEST_TOPICS, ratelimit.TOPIC))
        if self.seed_workspaces:
            if not self.directory.wait_ready(ready_timeout):
                log.warning("workspace credentials not loaded (%s); seeding skipped", self.directory.problem)
            else:
                changed = self.directory.seed(self.seed_workspaces)
                if changed:
                    log.info("seeded workspaces from the config file: %s", ", ".join(changed))

    def views(self) -> dict[str, bool]:
        return {
            "workspaces": self.directory.ready,
            "rate_limits": self.rates.ready.is_set(),
            "profiles": self.profiles.ready,
        }

    def stop(self) -> int:
        """Flush the producer and stop following; returns records left unsent."""
        left = self.delivery.close(self.settings.shutdown_timeout_s)
        self.directory.stop()
        self.rates.stop()
        self.profiles.stop()
        return left
