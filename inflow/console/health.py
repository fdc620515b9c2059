"""Health of every component: its ``/health`` (JSON) and Prometheus ``/metrics``, probed over HTTP.

A component answers ``up`` when either endpoint answers 200, ``unhealthy`` when ``/health`` answers
something else, and ``unreachable`` when nothing answers at its address (not started, or elsewhere:
set ``INFLOW_CONSOLE_COMPONENTS``).
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

MAX_BYTES = 4 * 1024 * 1024  # a /metrics page larger than this is not read


def metric_sums(text: str) -> dict[str, float]:
    """Each sample name summed over its labels (``_created`` samples left out)."""
    sums: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                sums[sample.name] += float(sample.value)
    return dict(sums)


def metric_by_label(text: str, name: str, label: str) -> dict[str, float]:
    """One sample name's values by one label, e.g. delivered events by stream."""
    out: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and label in sample.labels:
                out[sample.labels[label]] += float(sample.value)
    return dict(out)


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str] | None:
    try:
        async with session.get(url, allow_redirects=False) as resp:
            body = await resp.content.read(MAX_BYTES)
            return resp.status, body.decode("utf-8", "replace")
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None


async def probe(session: aiohttp.ClientSession, name: str, base: str) -> dict[str, Any]:
    """One component's state, its /health body and its /metrics text."""
    health, metrics = await asyncio.gather(_get(session, base + "/health"), _get(session, base + "/metrics"))
    out: dict[str, Any] = {"component": name, "url": base, "health": None, "metrics_text": None}
    if health is None and metrics is None:
        return out | {"status": "unreachable"}
    if health is not None and health[0] == 200:
        status = "up"
    elif health is not None and health[0] != 404:
        status = "unhealthy"
    else:
        status = "up" if metrics is not None and metrics[0] == 200 else "unhealthy"
    if health is not None and health[0] != 404:
        try:
            out["health"] = json.loads(health[1])
        except ValueError:
            out["health"] = {"text": health[1][:500]}
    if metrics is not None and metrics[0] == 200:
        out["metrics_text"] = metrics[1]
    return out | {"status": status}


async def probe_all(urls: dict[str, str], timeout_s: float) -> dict[str, dict[str, Any]]:
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        results = await asyncio.gather(*(probe(session, name, url) for name, url in urls.items()))
    return {r["component"]: r for r in results}
