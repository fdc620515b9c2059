"""The console process: admin API, OpenAPI document and web pages on one aiohttp server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web
from aiohttp.typedefs import Handler

from inflow.console import pages
from inflow.console.api import Console, add_routes, error_response
from inflow.console.audit import AuditLog
from inflow.console.openapi import document
from inflow.console.operations import Operations
from inflow.console.sampler import Sampler
from inflow.console.sessions import Sessions
from inflow.console.settings import ConsoleSettings, component_urls
from inflow.console.tokens import TokenStore
from inflow.runtime import Runtime
from inflow.schemas.serde import AvroSerde

log = logging.getLogger(__name__)
MAX_BODY = web.AppKey("max_body_bytes", int)
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}


@web.middleware
async def safety(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Security headers on every answer; an oversized body is a 413 with the reason, as JSON under /api."""
    try:
        response = await handler(request)
    except web.HTTPRequestEntityTooLarge:
        response = error_response(413, f"the body is over {request.app[MAX_BODY]} bytes")
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        response = error_response(exc.status, exc.reason)
    response.headers.update(HEADERS)
    return response


def build_app(console: Console, settings: ConsoleSettings) -> web.Application:
    app = web.Application(middlewares=[safety], client_max_size=settings.max_body_bytes)
    app[MAX_BODY] = settings.max_body_bytes
    openapi = document()

    async def openapi_json(request: web.Request) -> web.Response:
        return web.json_response(openapi)

    async def health(request: web.Request) -> web.Response:
        ready = console.tokens.view is not None and console.tokens.view.ready.is_set()
        body = {"status": "ok" if ready else "starting", "admin_tokens": "ok" if ready else "reading"}
        return web.json_response(body, status=200 if ready else 503)

    app.router.add_get("/api/openapi.json", openapi_json)
    app.router.add_get("/health", health)
    add_routes(app, console)
    app.router.add_routes(pages.routes(console))
    return app


def open_console(rt: Runtime, settings: ConsoleSettings) -> tuple[Console, str | None]:
    """Read the admin tokens (creating the bootstrap token when needed) and start the operations."""
    serde = AvroSerde(rt.kafka.schema_registry_url)
    tokens = TokenStore(rt.kafka, serde).start()
    if not tokens.wait_ready(60):
        tokens.stop()
        raise SystemExit(f"cannot read {tokens.topic}: {tokens.view.problem if tokens.view else '?'}")
    given = settings.token.get_secret_value() if settings.token else None
    fresh = tokens.bootstrap(given)
    ops = Operations(rt).start()
    sampler = Sampler(ops, settings, component_urls(settings))
    return Console(
        ops, tokens, AuditLog(rt.kafka, serde), Sessions(settings.session_hours * 3600), sampler
    ), fresh


async def serve(
    console: Console, settings: ConsoleSettings, stop: asyncio.Event, announce: bool = True
) -> None:
    app = build_app(console, settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    sampling = asyncio.create_task(console.sampler.run(stop))
    if announce:
        print(
            f"console answering on http://{settings.host}:{settings.port} "
            "(admin API /api, OpenAPI /api/openapi.json)",
            flush=True,
        )
    try:
        await stop.wait()
    finally:
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
        await runner.cleanup()


def run_console(rt: Runtime, settings: ConsoleSettings) -> int:
    console, fresh = open_console(rt, settings)
    if fresh is not None:
        print(
            "console: no admin token existed, so one was created (shown once; store it, or set "
            f"INFLOW_CONSOLE_TOKEN):\n  admin token 'bootstrap': {fresh}",
            flush=True,
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(console, settings, stop)

    try:
        asyncio.run(main())
    finally:
        console.ops.close()
        console.tokens.stop()
        console.audit.close()
    print("console stopped", flush=True)
    return 0
