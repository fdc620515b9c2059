"""HTTP delivery of one request body to a stream's endpoint with aiohttp, several requests in flight.

Any non-2xx answer, a timeout or a connection error is a failed attempt; failures are returned as data
(:class:`Attempt`) so the caller parks the whole batch in the next retry topic.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

from inflow.config.secrets import SecretBox
from inflow.sinks.streams.definitions import StreamDefinition


@dataclass(frozen=True, slots=True)
class Attempt:
    """Outcome of one POST: ``ok`` for 2xx; otherwise the status (None without a response) and a reason."""

    ok: bool
    status: int | None
    error: str
    latency_s: float


class Endpoint:
    """One stream's endpoint: a connection pool sized to its in-flight limit and its fixed headers."""

    def __init__(self, definition: StreamDefinition, box: SecretBox | None) -> None:
        self.url = definition.url
        self.safe_url = definition.url.split("?", 1)[0]  # query parameters may carry keys: never logged
        self._headers = definition.request_headers(box)
        self._timeout = aiohttp.ClientTimeout(total=definition.request_timeout_s)
        self._limit = definition.max_in_flight
        self._session: aiohttp.ClientSession | None = None

    async def post(self, body: bytes) -> Attempt:
        """POST the body once; never raises for HTTP, network or timeout failures."""
        session = self._session_for_loop()
        started = time.monotonic()
        try:
            async with session.post(self.url, data=body, headers=self._headers) as response:
                await response.read()
                status = response.status
                reason = response.reason or ""
        except TimeoutError:
            return Attempt(False, None, f"timeout after {self._timeout.total:g}s", time.monotonic() - started)
        except (aiohttp.ClientError, OSError) as exc:
            return Attempt(False, None, f"{type(exc).__name__}: {exc}"[:500], time.monotonic() - started)
        latency = time.monotonic() - started
        if 200 <= status < 300:
            return Attempt(True, status, "", latency)
        return Attempt(False, status, f"HTTP {status} {reason}".strip(), latency)

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
