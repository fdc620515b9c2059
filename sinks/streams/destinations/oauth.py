"""OAuth 2.0 client credentials (RFC 6749 §4.4) for a stream's endpoint: MoEngage's third auth option.

The access token is fetched from the stream's token endpoint (``grant_type=client_credentials``, the
client authenticated with HTTP Basic or in the body), cached, and fetched again before it expires
(``REFRESH_MARGIN`` of its lifetime, at most ``MAX_MARGIN_S`` early) or when the endpoint answers 401
with it. One fetch at a time: requests in flight wait for it and share the new token.

A token endpoint that fails (non-2xx, timeout, connection error, an answer without ``access_token``)
raises :class:`TokenUnavailable` with its reason; the destination turns it into a retriable outcome, so
the batch walks the stream's retry tiers to the DLQ like any failed delivery.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import aiohttp
import orjson

from inflow.sinks.streams.definitions import StreamAuth
from inflow.sinks.streams.exceptions import TokenUnavailable
from inflow.sinks.streams.redact import Redactor, mask_url

REFRESH_MARGIN = 0.1  # of the token's lifetime
MAX_MARGIN_S = 60.0
DEFAULT_LIFETIME_S = 3600.0  # when the answer has no expires_in
MAX_TOKEN_BODY = 64 * 1024


class ClientCredentials:
    """The cached access token of one stream."""

    def __init__(self, auth: StreamAuth, redact: Redactor, clock: Any = time.monotonic) -> None:
        assert auth.token_url and auth.client_id and auth.client_secret is not None
        self.url = auth.token_url
        self.safe_url = mask_url(auth.token_url)
        self._client_id = auth.client_id
        self._secret = auth.client_secret.get_secret_value()
        self._scope = auth.scope
        self._in_body = auth.client_auth == "body"
        self._redact = redact
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()

    async def header(self, session: aiohttp.ClientSession) -> str:
        """``Bearer <token>``: the cached token, or a new one when there is none or it is about to expire."""
        token = self._token
        if token is not None and self._clock() < self._refresh_at:
            return f"Bearer {token}"
        async with self._lock:
            if self._token is None or self._clock() >= self._refresh_at:
                await self._fetch(session)
            assert self._token is not None
            return f"Bearer {self._token}"

    def rejected(self, header: str) -> None:
        """The endpoint answered 401 to this token: the next request fetches another."""
        if self._token is not None and header == f"Bearer {self._token}":
            self._token = None

    async def _fetch(self, session: aiohttp.ClientSession) -> None:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        headers = {"Accept": "application/json"}
        if self._in_body:
            form |= {"client_id": self._client_id, "client_secret": self._secret}
        else:
            pair = base64.b64encode(f"{self._client_id}:{self._secret}".encode()).decode()
            headers["Authorization"] = f"Basic {pair}"
        try:
            async with session.post(self.url, data=form, headers=headers, allow_redirects=False) as response:
                body = await response.content.read(MAX_TOKEN_BODY)
                status = response.status
        except TimeoutError as exc:
            raise TokenUnavailable(f"token endpoint {self.safe_url}: timeout") from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise TokenUnavailable(
                self._redact(f"token endpoint {self.safe_url}: {type(exc).__name__}: {exc}")[:500]
            ) from exc
        if not 200 <= status < 300:
            raise TokenUnavailable(f"token endpoint {self.safe_url}: HTTP {status}")
        self._token, lifetime = parse_token(body, self.safe_url)
        margin = min(MAX_MARGIN_S, lifetime * REFRESH_MARGIN)
        self._refresh_at = self._clock() + max(0.0, lifetime - margin)


def parse_token(body: bytes, where: str) -> tuple[str, float]:
    """``(access_token, lifetime in seconds)`` of a token answer (RFC 6749 §5.1)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise TokenUnavailable(f"token endpoint {where}: the answer is not JSON") from exc
    if not isinstance(data, dict):
        raise TokenUnavailable(f"token endpoint {where}: the answer is not a JSON object")
    token = data.get("access_token")
    if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
        raise TokenUnavailable(f"token endpoint {where}: no usable access_token in the answer")
    kind = data.get("token_type", "Bearer")
    if not isinstance(kind, str) or kind.lower() != "bearer":
        raise TokenUnavailable(f"token endpoint {where}: token_type {kind!r} is not Bearer")
    expires = data.get("expires_in", DEFAULT_LIFETIME_S)
    try:
        lifetime = float(expires)
    except (TypeError, ValueError) as exc:
        raise TokenUnavailable(f"token endpoint {where}: expires_in {expires!r} is not a number") from exc
    return token, max(0.0, lifetime)
