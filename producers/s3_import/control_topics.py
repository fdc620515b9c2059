"""Finding the control topics the import uses; a topic just created may take a moment to show in metadata."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from inflow.producers.s3_import.exceptions import S3ImportError


def topic_partitions(client: Any, topic: str, timeout: float = 30.0) -> list[int]:
    """Partition ids of ``topic``; raises with the fix when it does not exist within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        md = client.list_topics(topic, timeout=10).topics.get(topic)
        if md is not None and md.error is None and md.partitions:
            return sorted(md.partitions)
        if time.monotonic() > deadline:
            raise S3ImportError(f"topic {topic} is missing: run `inflow topics create`")
        time.sleep(0.5)


def watermarks(client: Any, tp: TopicPartition, timeout: float = 30.0) -> tuple[int, int]:
    """Low and high offsets, retried while a new topic's leader is being elected."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = client.get_watermark_offsets(tp, timeout=10, cached=False)
            return int(low), int(high)
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise S3ImportError(f"cannot read offsets of {tp.topic} [{tp.partition}]: {exc}") from exc
            time.sleep(0.5)
