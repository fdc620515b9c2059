"""The end-to-end bench's Streams endpoint: an aiohttp server on 127.0.0.1 in a process of its own.

It runs apart from the load generator so the two do not share one GIL. For every event of a request it
keeps the bench's id (``bench_r`` request number × 1024 + ``bench_k`` event index, both event attributes
set by the load generator) and the ``time.monotonic()`` of the request's receipt (CLOCK_MONOTONIC is one
clock for every process of the machine). Copies of an id already seen are counted as duplicates. Request 0
is the readiness probe and is only counted.

Protocol over the pipe: the child sends its port once it listens; the parent sends ``"stop"``; the child
answers with a stats dict and then the two arrays as bytes (ids as int64, times as float64).
"""

from __future__ import annotations

import asyncio
import threading
import time
from array import array
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from typing import Any

import orjson

PROBE = 0
K_SPACE = 1024  # events per request are below this (20 users x 18 events = 360)


def serve(conn: Connection, delivered: Synchronized[int], probe: Synchronized[int]) -> None:
    """Process entry point: serve until ``"stop"`` arrives on ``conn``, then send what was received."""
    from aiohttp import web

    from inflow.local.process import free_port

    ids, times = array("q"), array("d")
    seen: set[int] = set()
    stats: dict[str, Any] = {"requests": 0, "events": 0, "duplicates": 0, "untagged": 0, "bad_requests": 0}

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.monotonic()
        stats["requests"] += 1
        try:
            events = orjson.loads(body)["events"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            stats["bad_requests"] += 1
            return web.json_response({"status": "fail"}, status=400)
        for e in events:
            stats["events"] += 1
            attrs = e.get("event_attributes")
            r = attrs.get("bench_r") if isinstance(attrs, dict) else None
            if not isinstance(r, int):
                stats["untagged"] += 1
                continue
            if r == PROBE:
                probe.value += 1
                continue
            key = r * K_SPACE + int(attrs.get("bench_k", 0))
            if key in seen:
                stats["duplicates"] += 1
                continue
            seen.add(key)
            ids.append(key)
            times.append(now)
        delivered.value = len(ids)
        return web.json_response({"status": "ok"})

    loop = asyncio.new_event_loop()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    port = free_port()
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())

    def wait_for_stop() -> None:
        conn.recv()
        loop.call_soon_threadsafe(loop.stop)

    threading.Thread(target=wait_for_stop, daemon=True).start()
    conn.send(port)
    loop.run_forever()
    loop.run_until_complete(runner.cleanup())
    loop.close()
    conn.send(stats)
    conn.send_bytes(ids.tobytes())
    conn.send_bytes(times.tobytes())
    conn.close()
