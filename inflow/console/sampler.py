"""The overview: rates, lag and errors per component, sampled every few seconds and kept for a while.

Each sample reads the catalogue topics' end offsets (records in: the ``ingest.*`` topics; enriched out:
``events``; rejected: ``processors.rejected``; dead batches: ``streams.dlq``), the consumer groups' lag,
and every component's ``/health`` and ``/metrics``. Rates are differences between two samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

from inflow.console.health import metric_by_label, metric_sums, probe_all
from inflow.console.operations import Operations
from inflow.console.settings import ConsoleSettings

log = logging.getLogger(__name__)
KEEP = 180  # samples kept (6 minutes at the default 2 s)
ERROR_METRIC = re.compile(r"(fail|reject|error|dead_letter|invalid)[a-z_]*_total$")
DELIVERED = "inflow_streams_delivered_events_total"
DEAD_LETTERED = "inflow_streams_dead_lettered_batches_total"
RETRIED = "inflow_streams_retried_batches_total"


def _topic_total(topics: list[dict[str, Any]], match: Any) -> int:
    return sum(t["end_offset_total"] for t in topics if match(t["short_name"]))


def errors_from_metrics(text: str | None) -> float | None:
    """Sum of a component's counters named for failures (failed, rejected, error, dead-lettered)."""
    if text is None:
        return None
    return sum(v for name, v in metric_sums(text).items() if ERROR_METRIC.search(name))


class Sampler:
    """Samples the pipeline on the console's event loop; ``overview()`` answers from the samples."""

    def __init__(self, ops: Operations, settings: ConsoleSettings, urls: dict[str, str]) -> None:
        self.ops = ops
        self.settings = settings
        self.urls = urls
        self.samples: deque[dict[str, Any]] = deque(maxlen=KEEP)
        self.health: dict[str, dict[str, Any]] = {}
        self.groups: list[dict[str, Any]] = []
        self.problem: str | None = "no sample yet"
        self.taken = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sample()
                self.problem = None
            except Exception as exc:  # Kafka away: the overview says so and sampling goes on
                self.problem = f"{type(exc).__name__}: {exc}"
                log.warning("sampling failed: %s", self.problem)
            self.taken.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.sample_interval_s)

    async def sample(self) -> None:
        health_task = asyncio.create_task(probe_all(self.urls, self.settings.probe_timeout_s))
        topics = await asyncio.to_thread(self.ops.topics)
        groups = await asyncio.to_thread(self.ops.consumer_groups)
        self.health = await health_task
        self.groups = groups
        sink_metrics = self.health.get("sink", {}).get("metrics_text")
        delivered_by_stream = metric_by_label(sink_metrics, DELIVERED, "stream") if sink_metrics else {}
        failed_by_stream: dict[str, float] = {}
        for name in (RETRIED, DEAD_LETTERED):
            for stream, value in (
                metric_by_label(sink_metrics, name, "stream") if sink_metrics else {}
            ).items():
                failed_by_stream[stream] = failed_by_stream.get(stream, 0.0) + value
        self.samples.append(
            {
                "t": time.time(),
                "ingested": _topic_total(topics, lambda n: n.startswith("ingest.")),
                "enriched": _topic_total(topics, lambda n: n == "events"),
                "rejected": _topic_total(topics, lambda n: n == "processors.rejected"),
                "dlq": _topic_total(topics, lambda n: n == "streams.dlq"),
                "delivered": sum(delivered_by_stream.values()) if sink_metrics else None,
                "delivered_by_stream": delivered_by_stream,
                "failed_by_stream": failed_by_stream,
            }
        )

    def series(self) -> list[dict[str, Any]]:
        """Per-second rates between consecutive samples: in (ingested), enriched, delivered."""
        points = []
        samples = list(self.samples)
        for a, b in zip(samples, samples[1:], strict=False):
            dt = max(b["t"] - a["t"], 1e-3)
            point = {"t": b["t"]}
            for name in ("ingested", "enriched", "delivered"):
                if a[name] is None or b[name] is None:
                    point[name] = None
                else:
                    point[name] = round(max(0.0, (b[name] - a[name]) / dt), 2)
            points.append(point)
        return points

    def stream_rates(self) -> dict[str, dict[str, float]]:
        """Delivered events per stream: the total the sink reports and the rate over the last minute."""
        samples = list(self.samples)
        if not samples:
            return {}
        last = samples[-1]
        first = next((s for s in samples if last["t"] - s["t"] <= 60), last)
        out = {}
        for stream, total in last["delivered_by_stream"].items():
            before = first["delivered_by_stream"].get(stream, total)
            dt = max(last["t"] - first["t"], 1e-3)
            out[stream] = {
                "delivered": total,
                "per_s": round(max(0.0, (total - before) / dt), 2) if dt > 0.5 else 0.0,
            }
        return out

    def recent_deliveries(self, limit: int = 20) -> list[dict[str, Any]]:
        """Sample intervals in which a stream delivered events or failed batches, newest first."""
        samples = list(self.samples)
        out = []
        for a, b in zip(samples, samples[1:], strict=False):
            for stream in sorted(set(b["delivered_by_stream"]) | set(b["failed_by_stream"])):
                delivered = b["delivered_by_stream"].get(stream, 0) - a["delivered_by_stream"].get(stream, 0)
                failed = b["failed_by_stream"].get(stream, 0) - a["failed_by_stream"].get(stream, 0)
                if delivered > 0 or failed > 0:
                    at = datetime.fromtimestamp(b["t"], UTC).strftime("%H:%M:%S")
                    out.append(
                        {"at": at, "stream": stream, "delivered": int(delivered), "failed": int(failed)}
                    )
        return out[::-1][:limit]

    def components(self) -> list[dict[str, Any]]:
        lag: dict[str, int] = {}
        for g in self.groups:
            lag[g["component"]] = lag.get(g["component"], 0) + g["lag"]
        out = []
        for name, probe in sorted(self.health.items()):
            out.append(
                {
                    "component": name,
                    "url": probe["url"],
                    "status": probe["status"],
                    "lag": lag.get(name),
                    "errors": errors_from_metrics(probe.get("metrics_text")),
                    "health": probe.get("health"),
                }
            )
        return out

    def overview(self) -> dict[str, Any]:
        last = self.samples[-1] if self.samples else {}
        return {
            "problem": self.problem,
            "interval_s": self.settings.sample_interval_s,
            "series": self.series(),
            "components": self.components(),
            "groups": [{k: g[k] for k in ("group", "component", "lag")} for g in self.groups],
            "totals": {k: last.get(k) for k in ("ingested", "enriched", "delivered", "rejected", "dlq")},
            "streams": self.stream_rates(),
        }
