"""Settings resolved once for a command: which Kafka, which S3, where state lives, the YAML file."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from inflow.config.file import InflowFile, load_config_file
from inflow.config.settings import (
    KafkaSettings,
    LocalKafkaSettings,
    LocalS3Settings,
    PathSettings,
    S3Settings,
)
from inflow.local.kafka import LocalKafka


@dataclass
class Runtime:
    """Everything a component needs to find its external systems; built from the environment."""

    paths: PathSettings = field(default_factory=PathSettings)
    local_kafka_settings: LocalKafkaSettings = field(default_factory=LocalKafkaSettings)
    local_s3_settings: LocalS3Settings = field(default_factory=LocalS3Settings)
    kafka_settings: KafkaSettings = field(default_factory=KafkaSettings)
    s3_settings: S3Settings = field(default_factory=S3Settings)

    @property
    def uses_local_kafka(self) -> bool:
        return not self.kafka_settings.bootstrap_servers

    @property
    def uses_local_s3(self) -> bool:
        return not self.s3_settings.endpoint_url

    @cached_property
    def kafka(self) -> KafkaSettings:
        """Kafka settings with the bootstrap address filled in from the local broker when unset."""
        if self.kafka_settings.bootstrap_servers:
            return self.kafka_settings
        local = f"127.0.0.1:{self.local_kafka_settings.port}"
        return self.kafka_settings.model_copy(update={"bootstrap_servers": local})

    @cached_property
    def s3(self) -> S3Settings:
        if self.s3_settings.endpoint_url:
            return self.s3_settings
        local = f"http://127.0.0.1:{self.local_s3_settings.port}"
        return self.s3_settings.model_copy(update={"endpoint_url": local})

    @cached_property
    def config(self) -> InflowFile:
        return load_config_file(self.paths.config)

    def local_kafka(self) -> LocalKafka:
        return LocalKafka(self.paths.home, self.paths.cache_dir, self.local_kafka_settings)

    def local_s3(self):  # type: ignore[no-untyped-def]
        from inflow.local.s3 import LocalS3

        return LocalS3(self.paths.home, self.s3_settings, self.local_s3_settings)
