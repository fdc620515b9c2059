"""A real HTTP endpoint for the sink to call: an aiohttp server on 127.0.0.1 in its own thread.

It records every request (path, query, headers, JSON body, arrival time) and answers from a script of
status codes (then 200), optionally after a delay.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from inflow.local.process import free_port


@dataclass
class Recorded:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]
    raw: bytes
    at: float
    status: int

    @property
    def event_uuids(self) -> list[str]:
        return [e["event_uuid"] for e in self.body["events"]]


@dataclass
class RecordingEndpoint:
    statuses: list[int] = field(default_factory=list)  # answered in order, then `default`
    default: int = 200
    delay_s: float = 0.0
    decide: Callable[[int, dict[str, Any]], int] | None = None
    requests: list[Recorded] = field(default_factory=list)
    redirect_to: str | None = None  # sent as Location with every answer (for 3xx statuses)

    def __post_init__(self) -> None:
        self.port = free_port()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ingest"

    def start(self) -> RecordingEndpoint:
        self._thread.start()
        assert self._ready.wait(15), "endpoint did not start"
        return self

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = json.loads(raw) if raw else {"events": [], "method": request.method}
        with self._lock:
            index = len(self.requests)
            if self.decide is not None:
                status = self.decide(index, body)
            else:
                status = self.statuses[index] if index < len(self.statuses) else self.default
            self.requests.append(
                Recorded(
                    request.path,
                    dict(request.query),
                    dict(request.headers),
                    body,
                    raw,
                    time.monotonic(),
                    status,
                )
            )
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        headers = {"Location": self.redirect_to} if self.redirect_to else None
        return web.json_response({"status": "ok" if status < 300 else "fail"}, status=status, headers=headers)

    def snapshot(self) -> list[Recorded]:
        with self._lock:
            return list(self.requests)

    def delivered_uuids(self) -> set[str]:
        return {u for r in self.snapshot() if 200 <= r.status < 300 for u in r.event_uuids}

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)


@dataclass
class TokenEndpoint:
    """A real OAuth 2.0 token endpoint (client credentials) on 127.0.0.1: hands out ``tok-1``, ``tok-2``, ...

    ``statuses`` are answered first (an error status gives no token), then 200 with a new token valid for
    ``expires_in`` seconds. Every request's form and Authorization header are recorded."""

    statuses: list[int] = field(default_factory=list)
    expires_in: float = 3600
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.port = free_port()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.issued = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def start(self) -> TokenEndpoint:
        self._thread.start()
        assert self._ready.wait(15), "token endpoint did not start"
        return self

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/token", self._handle)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    async def _handle(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        with self._lock:
            index = len(self.requests)
            self.requests.append({"form": form, "authorization": request.headers.get("Authorization")})
            status = self.statuses[index] if index < len(self.statuses) else 200
            if status != 200:
                return web.json_response({"error": "server_error"}, status=status)
            self.issued += 1
            token = f"tok-{self.issued}"
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}
        )

    def calls(self) -> int:
        with self._lock:
            return len(self.requests)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)
