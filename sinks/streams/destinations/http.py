"""The HTTP destination: each batch POSTed as one MoEngage Streams request body with aiohttp.

A 2xx answer is a delivery. Like MoEngage Streams, every other answer, a timeout or a connection error is a
failure worth retrying on the stream's retry schedule (the endpoint may recover), so they come back as
retriable outcomes with their reason ("HTTP 503 Service Unavailable", "timeout after 30s").

Redirects are never followed: a 3xx would turn the POST into a GET elsewhere (whose 200 would count as a
delivery) and carry the stream's credentials to another origin, so it is a failed attempt with its reason.
Every address is checked by the sink's outbound policy before a connection is opened
(:mod:`inflow.sinks.streams.addresses`), and reasons never repeat the stream's secrets
(:mod:`inflow.sinks.streams.redact`).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from inflow.config.secrets import SecretBox
from inflow.sinks.streams.addresses import AddressRefused, GuardedResolver, literal_host_verdict
from inflow.sinks.streams.definitions import StreamDefinition
from inflow.sinks.streams.destinations.base import Outcome, OutgoingBatch
from inflow.sinks.streams.destinations.oauth import ClientCredentials
from inflow.sinks.streams.exceptions import StreamDefinitionError, TokenUnavailable
from inflow.sinks.streams.payload import request_body
from inflow.sinks.streams.redact import Redactor, mask_url
from inflow.sinks.streams.settings import SinkSettings


class HttpDestination:
    """One stream's endpoint: a connection pool sized to its in-flight limit and its fixed headers.

    Raises :class:`StreamDefinitionError` when the stream's secrets cannot be decrypted, a decrypted value
    is refused (CR/LF in a header) or its URL names an address the policy refuses: the stream is held."""

    def __init__(
        self, definition: StreamDefinition, box: SecretBox | None, settings: SinkSettings | None = None
    ) -> None:
        plain = definition.revealed(box)
        self.settings = settings or SinkSettings()
        verdict = literal_host_verdict(plain.url, self.settings)
        if not verdict.allowed:
            raise StreamDefinitionError(f"stream {definition.id}: {verdict.reason}")
        self.url = plain.url
        self.app_name = plain.app_name
        self._safe_url = mask_url(plain.url)  # query values and passwords may be keys: never logged
        self._redact = Redactor(plain.url, plain.secret_values())
        self._headers = plain.request_headers(None)
        self._timeout = aiohttp.ClientTimeout(total=plain.request_timeout_s)
        self._limit = plain.max_in_flight
        self._session: aiohttp.ClientSession | None = None
        self.oauth = ClientCredentials(plain.auth, self._redact) if plain.auth.type == "oauth2" else None
        if self.oauth is not None:
            token_verdict = literal_host_verdict(self.oauth.url, self.settings)
            if not token_verdict.allowed:
                raise StreamDefinitionError(f"stream {definition.id}: auth.token_url: {token_verdict.reason}")

    @property
    def safe_name(self) -> str:
        return self._safe_url

    async def deliver(self, batch: OutgoingBatch) -> Outcome:
        """POST the batch's request body once."""
        return await self.post(request_body(self.app_name, batch.moe_request_id, batch.events_json))

    async def post(self, body: bytes) -> Outcome:
        """POST a body once; never raises for HTTP, network or timeout failures.

        With OAuth 2.0, a 401 answer drops the token and the body is posted once more with a new one (the
        token may have been revoked or expired early); a token endpoint failure is a retriable outcome."""
        if self.oauth is None:
            return await self._post(body, self._headers)
        started = time.monotonic()
        for _attempt in range(2):
            try:
                header = await self.oauth.header(self._session_for_loop())
            except TokenUnavailable as exc:
                return Outcome.retriable(str(exc)[:500], latency_s=time.monotonic() - started)
            outcome = await self._post(body, self._headers | {"Authorization": header})
            if outcome.status != 401:
                return outcome
            self.oauth.rejected(header)
        return outcome

    async def _post(self, body: bytes, headers: dict[str, str]) -> Outcome:
        session = self._session_for_loop()
        started = time.monotonic()
        location = None
        try:
            async with session.post(self.url, data=body, headers=headers, allow_redirects=False) as response:
                await response.read()
                status = response.status
                reason = response.reason or ""
                location = response.headers.get("Location")
        except TimeoutError:
            return Outcome.retriable(
                f"timeout after {self._timeout.total:g}s", latency_s=time.monotonic() - started
            )
        except aiohttp.ClientConnectorError as exc:
            latency = time.monotonic() - started
            if isinstance(exc.os_error, AddressRefused):
                return Outcome.retriable(self._redact(f"refused: {exc.os_error}")[:500], latency_s=latency)
            return Outcome.retriable(self._redact(f"{type(exc).__name__}: {exc}")[:500], latency_s=latency)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return Outcome.retriable(
                self._redact(f"{type(exc).__name__}: {exc}")[:500], latency_s=time.monotonic() - started
            )
        latency = time.monotonic() - started
        if 200 <= status < 300:
            return Outcome.delivered(status, latency)
        text = f"HTTP {status} {reason}".strip()
        if 300 <= status < 400:
            target = mask_url(location) if location else "nowhere"
            text += f": redirect to {target} not followed"
        return Outcome.retriable(self._redact(text)[:500], status, latency)

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # The export and retry loops each keep up to max_in_flight requests open: a pool for both, so no
            # request spends its timeout waiting for a connection. Every resolved address is checked by the
            # outbound policy before a connection to it is opened.
            connector = aiohttp.TCPConnector(
                limit=2 * self._limit, ttl_dns_cache=300, resolver=GuardedResolver(self.settings)
            )
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
            await asyncio.sleep(0)  # let aiohttp close the transports
