"""The ``/metrics`` (Prometheus text format) and ``/health`` (JSON) server of a component.

A WSGI application on the standard library's threading server, in a daemon thread: it answers while the
component's own loop is busy, and stops with :meth:`ObservabilityServer.stop`. ``/health`` answers 200
when every check passes, else 503, with the checks in the body.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

from inflow.observability.health import Health

log = logging.getLogger(__name__)
StartResponse = Callable[..., Any]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        return


class ObservabilityServer:
    """Serves ``registry`` at ``/metrics`` and ``health`` at ``/health`` on ``host:port`` (0: any free)."""

    def __init__(
        self,
        health: Health,
        port: int,
        host: str = "127.0.0.1",
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.health = health
        self.registry = registry
        self._metrics = make_wsgi_app(registry)
        self._server = make_server(host, port, self._app, _ThreadingServer, handler_class=_QuietHandler)
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"{health.component}-metrics", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ObservabilityServer:
        self._thread.start()
        log.info("%s: metrics on %s/metrics, health on %s/health", self.health.component, self.url, self.url)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics(environ, start_response)  # type: ignore[no-any-return]
        if path == "/health":
            report = self.health.report()
            status = "200 OK" if report["status"] == "ok" else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [orjson.dumps(report)]
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [orjson.dumps({"error": "not found", "paths": ["/metrics", "/health"]})]
