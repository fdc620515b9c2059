"""A small Confluent-compatible Schema Registry on 127.0.0.1 for the sink's tests: register and fetch by id.

It can be stopped and started again on the same port, keeping its schemas (an outage, then recovery).
"""

from __future__ import annotations

import asyncio
import json
import threading

from aiohttp import web

from inflow.local.process import free_port


class LocalRegistry:
    def __init__(self) -> None:
        self.port = free_port()
        self.ids: dict[str, int] = {}
        self.schemas: dict[int, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalRegistry:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        assert ready.wait(15), "registry did not start"
        return self

    def _serve(self, ready: threading.Event) -> None:
        loop = self._loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/subjects/{subject}/versions", self._register)
        app.router.add_get("/schemas/ids/{id}", self._schema)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    async def _register(self, request: web.Request) -> web.Response:
        schema = (await request.json())["schema"]
        if schema not in self.ids:
            self.ids[schema] = len(self.ids) + 1
            self.schemas[self.ids[schema]] = schema
        return web.json_response({"id": self.ids[schema]})

    async def _schema(self, request: web.Request) -> web.Response:
        found = self.schemas.get(int(request.match_info["id"]))
        if found is None:
            return web.json_response({"error_code": 40403, "message": "Schema not found"}, status=404)
        return web.Response(text=json.dumps({"schema": found}), content_type="application/json")

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(15)
            self._loop = None
