"""Run one gateway process until SIGTERM/SIGINT, then drain requests, flush the producer and exit 0."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal

from aiohttp import web

from inflow.config.file import WorkspaceConfig
from inflow.config.settings import KafkaSettings
from inflow.producers.bulk_api import redaction
from inflow.producers.bulk_api.gateway import Gateway
from inflow.producers.bulk_api.routes import build_app
from inflow.producers.bulk_api.settings import GatewaySettings

log = logging.getLogger(__name__)


async def serve(gateway: Gateway, stop: asyncio.Event, announce: bool = True) -> int:
    """Listen until ``stop`` is set; returns the port actually bound (useful with port 0)."""
    redaction.install()
    runner = web.AppRunner(
        build_app(gateway), shutdown_timeout=gateway.settings.shutdown_timeout_s, access_log=None
    )
    await runner.setup()
    site = web.TCPSite(runner, gateway.settings.host, gateway.settings.port, backlog=1024)
    await site.start()
    port = runner.addresses[0][1]
    if announce:
        print(f"gateway {gateway.gateway_id} listening on http://{gateway.settings.host}:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()  # stops accepting, lets in-flight requests finish
    return int(port)


def run_gateway(kafka: KafkaSettings, settings: GatewaySettings, workspaces: list[WorkspaceConfig]) -> int:
    """The ``inflow gateway`` command body; exit code 0 after a graceful stop."""
    gateway = Gateway(kafka, settings, workspaces)
    gateway.start()
    # Requests allocate many short-lived dicts and no cycles: collect the young generation less often,
    # and move start-up objects out of the collector's view.
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(gateway, stop)

    try:
        asyncio.run(main())
    finally:
        left = gateway.stop()
        if left:
            log.error("%d records were still unacknowledged at shutdown", left)
    print("gateway stopped", flush=True)
    return 0 if not left else 1
