"""The HTTP destination: each batch POSTed as one MoEngage Streams request body with aiohttp.

A 2xx answer is a delivery. Like MoEngage Streams, every other answer, a timeout or a connection error is a
failure worth retrying on the stream's retry schedule (the endpoint may recover), so they come back as
retriable outcomes with their reason ("HTTP 503 Service Unavailable", "timeout after 30s").
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from inflow.config.secrets import SecretBox
from inflow.sinks.streams.definitions import StreamDefinition
from inflow.sinks.streams.destinations.base import Outcome, OutgoingBatch
from inflow.sinks.streams.payload import request_body


class HttpDestination:
    """One stream's endpoint: a connection pool sized to its in-flight limit and its fixed headers."""

    def __init__(self, definition: StreamDefinition, box: SecretBox | None) -> None:
        self.url = definition.url
        self.app_name = definition.app_name
        self._safe_url = definition.url.split("?", 1)[0]  # query parameters may carry keys: never logged
        self._headers = definition.request_headers(box)
        self._timeout = aiohttp.ClientTimeout(total=definition.request_timeout_s)
        self._limit = definition.max_in_flight
        self._session: aiohttp.ClientSession | None = None

    @property
    def safe_name(self) -> str:
        return self._safe_url

    async def deliver(self, batch: OutgoingBatch) -> Outcome:
        """POST the batch's request body once."""
        return await self.post(request_body(self.app_name, batch.moe_request_id, batch.events_json))

    async def post(self, body: bytes) -> Outcome:
        """POST a body once; never raises for HTTP, network or timeout failures."""
        session = self._session_for_loop()
        started = time.monotonic()
        try:
            async with session.post(self.url, data=body, headers=self._headers) as response:
                await response.read()
                status = response.status
                reason = response.reason or ""
        except TimeoutError:
            return Outcome.retriable(
                f"timeout after {self._timeout.total:g}s", latency_s=time.monotonic() - started
            )
        except (aiohttp.ClientError, OSError) as exc:
            return Outcome.retriable(
                f"{type(exc).__name__}: {exc}"[:500], latency_s=time.monotonic() - started
            )
        latency = time.monotonic() - started
        if 200 <= status < 300:
            return Outcome.delivered(status, latency)
        return Outcome.retriable(f"HTTP {status} {reason}".strip(), status, latency)

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # The export and retry loops each keep up to max_in_flight requests open: a pool for both, so no
            # request spends its timeout waiting for a connection.
            connector = aiohttp.TCPConnector(limit=2 * self._limit, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
            await asyncio.sleep(0)  # let aiohttp close the transports
