"""A periodic collector of consumer lag for ``/metrics``, the same in every component.

Every ``interval_s`` it reads, from the broker, the lag of each consumer group whose name starts with one
of ``group_prefixes`` (groups appear and go as streams are added or removed) and serves it as
``inflow_consumer_lag{group,topic,partition}`` and ``inflow_consumer_group_lag{group}``. Its health check
fails when the last successful read is older than three intervals (the broker cannot be reached).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from inflow.config.settings import KafkaSettings
from inflow.errors import InflowError
from inflow.kafka.lag import LagReader, PartitionLag

log = logging.getLogger(__name__)


class LagCollector(Collector):
    """Reads lag on a thread of its own; scrapes are answered from the last read, never wait on Kafka."""

    def __init__(
        self,
        kafka: KafkaSettings,
        group_prefixes: Sequence[str],
        *,
        interval_s: float = 15.0,
        timeout_s: float = 10.0,
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.kafka = kafka
        self.group_prefixes = tuple(group_prefixes)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.lags: list[PartitionLag] = []
        self.read_at: float | None = None  # time.monotonic() of the last successful read
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader: LagReader | None = None
        if registry is not None:
            registry.register(self)

    def read_once(self) -> list[PartitionLag]:
        """Read every matching group's lag now (also what the thread does each interval)."""
        if self._reader is None:
            self._reader = LagReader(self.kafka, self.timeout_s)
        groups = sorted({g for p in self.group_prefixes for g in self._reader.groups(p)})
        lags = [lag for group in groups for lag in self._reader.lag(group)]
        self.lags, self.read_at, self.error = lags, time.monotonic(), None
        return lags

    def start(self) -> LagCollector:
        self._thread = threading.Thread(target=self._run, name="consumer-lag", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.read_once()
            except InflowError as exc:
                if self.error != str(exc):
                    log.warning("consumer lag not read: %s", exc)
                self.error = str(exc)
            except Exception as exc:  # noqa: BLE001 - lag is for operators; it must never stop the component
                log.exception("consumer lag not read")
                self.error = type(exc).__name__
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def check(self) -> tuple[bool, str]:
        """Health: the last read is recent; the detail is the total lag or why it was not read."""
        if self.read_at is None:  # starting: healthy until a read has failed
            return self.error is None, self.error or "first read pending"
        age = time.monotonic() - self.read_at
        if age > 3 * self.interval_s:
            return False, f"not read for {age:.0f} s: {self.error or 'no answer'}"
        total = sum(lag.lag for lag in self.lags)
        return True, f"{total} records behind in {len({lag.group for lag in self.lags})} groups"

    def collect(self) -> Iterable[Metric]:
        return _families(self.lags)


def _families(lags: list[PartitionLag]) -> Iterator[Metric]:
    partition = GaugeMetricFamily(
        "inflow_consumer_lag",
        "Records of a partition not yet committed by a consumer group (high watermark - committed offset)",
        labels=["group", "topic", "partition"],
    )
    group = GaugeMetricFamily(
        "inflow_consumer_group_lag", "Records behind over every partition of a group", labels=["group"]
    )
    totals: dict[str, int] = {}
    for lag in lags:
        partition.add_metric([lag.group, lag.topic, str(lag.partition)], lag.lag)
        totals[lag.group] = totals.get(lag.group, 0) + lag.lag
    for name, total in sorted(totals.items()):
        group.add_metric([name], total)
    yield partition
    yield group
