"""HTTP Basic authentication of the Data APIs: workspace id as user name, data API key as password.

Each fault gets MoEngage's status, type and message for it. A verified key is cached as a SHA-256
fingerprint next to the credential's hash, so only the first request after a start or a rotation pays for
scrypt; a rotation changes the stored hash and so invalidates the cache entry by itself.

Password guessing is slowed by :class:`FailedLogins`: after ``failed_logins_per_minute`` failed logins of
one client address on one workspace within a minute, that pair is answered 429 with ``Retry-After``
until the minute is over, without checking the key. The counts are kept in each gateway's memory (a
client spreading its guesses over N gateways gets N times the allowance).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Mapping

from inflow.producers.bulk_api.exceptions import ApiError
from inflow.producers.bulk_api.messages import account_suspended, server_unavailable
from inflow.workspaces.keys import fingerprint, verify_key
from inflow.workspaces.registry import Workspace, WorkspaceRegistry

REQUIRED = "Authentication required"
NEGATIVE_CACHE_SIZE = 10_000
FAILED_LOGIN_ENTRIES = 100_000


def credentials(header: str | None) -> tuple[str, str]:
    """Decode ``Authorization: Basic base64(user:password)`` with MoEngage's error for each fault."""
    if header is None:
        raise ApiError(401, "Authentication Required", "Authentication Header Required")
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise ApiError(401, REQUIRED, "No identity information found")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise ApiError(401, REQUIRED, "Invalid identity information found") from exc
    user, sep, password = decoded.partition(":")
    if not sep:
        raise ApiError(401, REQUIRED, "Invalid identity information found")
    if not user:
        raise ApiError(401, REQUIRED, "APP_KEY missing in the authentication header")
    if not password:
        raise ApiError(401, REQUIRED, "APP_SECRET missing in the authentication header")
    return user, password


class FailedLogins:
    """Failed logins per (client address, workspace) in fixed one-minute windows, in memory."""

    def __init__(self, per_minute: int, window_s: int = 60) -> None:
        self.per_minute = per_minute
        self.window_s = window_s
        self._counts: dict[tuple[str, str], tuple[int, int]] = {}

    def _window(self, now: float) -> int:
        return int(now // self.window_s)

    def retry_after(self, client: str, workspace_id: str, now: float) -> int | None:
        """Seconds until the pair may try again, or None when it may try now."""
        window, count = self._counts.get((client, workspace_id), (-1, 0))
        if window != self._window(now) or count < self.per_minute:
            return None
        return max(1, math.ceil((window + 1) * self.window_s - now))

    def failed(self, client: str, workspace_id: str, now: float) -> None:
        current = self._window(now)
        window, count = self._counts.get((client, workspace_id), (current, 0))
        self._counts[(client, workspace_id)] = (current, count + 1 if window == current else 1)
        if len(self._counts) > FAILED_LOGIN_ENTRIES:  # bounded: forget pairs of windows that are over
            self._counts = {k: v for k, v in self._counts.items() if v[0] == current}
            while len(self._counts) > FAILED_LOGIN_ENTRIES:
                del self._counts[next(iter(self._counts))]


def too_many_failed_logins(retry_after: int) -> ApiError:
    return ApiError(
        429,
        "Too Many Requests",
        f"Too many failed logins from this address. Retry after {retry_after} seconds.",
        headers={"Retry-After": str(retry_after)},
    )


class Authenticator:
    """Checks a request's credentials against the workspace directory."""

    def __init__(self, directory: WorkspaceRegistry, failed_logins_per_minute: int = 10) -> None:
        self.directory = directory
        self.failures = FailedLogins(failed_logins_per_minute)
        self._verified: dict[str, tuple[str, bytes]] = {}
        self._rejected: OrderedDict[tuple[str, str, bytes], None] = OrderedDict()

    async def authenticate(
        self, headers: Mapping[str, str], workspace_id: str | None, client: str | None = None
    ) -> Workspace:
        """The authenticated workspace, or an ApiError with MoEngage's status and body.

        ``client`` is the client's address: failed logins are counted per address and workspace."""
        user, password = credentials(headers.get("Authorization"))
        if workspace_id is not None and workspace_id != user:
            raise ApiError(409, "Authentication Mismatch", "App key mismatch in params and authentication")
        app_key = headers.get("MOE-APPKEY")
        if app_key is not None and app_key != user:
            msg = "MOE_APPKEY doesn't match the Username (APP_KEY) used in Basic Auth authorization"
            raise ApiError(409, "HeaderMismatch", msg)
        if not self.directory.ready:
            raise server_unavailable("Workspace credentials are still loading.")
        now, who = time.time(), client or ""
        wait = self.failures.retry_after(who, user, now)
        if wait is not None:
            raise too_many_failed_logins(wait)
        try:
            return await self._check(user, password)
        except ApiError as exc:
            if exc.status == 401:
                self.failures.failed(who, user, now)
            raise

    async def _check(self, user: str, password: str) -> Workspace:
        workspace = self.directory.get(user)
        if workspace is None:
            raise ApiError(401, REQUIRED, "Invalid APP_ID used in Authentication Header")
        if workspace.disabled:
            raise account_suspended()
        if not workspace.key_hash:
            msg = "App Secret key is not set. Please login to the dashboard to set a key"
            raise ApiError(409, REQUIRED, msg)
        if not await self._key_matches(workspace, password):
            raise ApiError(
                401, REQUIRED, "App Secret key mismatch. Please login to the dashboard to verify key"
            )
        return workspace

    async def _key_matches(self, workspace: Workspace, password: str) -> bool:
        presented = fingerprint(password)
        cached = self._verified.get(workspace.id)
        if cached is not None and cached[0] == workspace.key_hash:
            return hmac.compare_digest(cached[1], presented)
        negative = (workspace.id, workspace.key_hash, presented)
        if negative in self._rejected:
            return False
        ok = await asyncio.get_running_loop().run_in_executor(None, verify_key, password, workspace.key_hash)
        if ok:
            self._verified[workspace.id] = (workspace.key_hash, presented)
        else:
            self._rejected[negative] = None
            if len(self._rejected) > NEGATIVE_CACHE_SIZE:
                self._rejected.popitem(last=False)
        return ok
