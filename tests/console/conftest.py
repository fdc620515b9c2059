"""A console served in-process on a loopback port (real HTTP, real Kafka, real S3), with admin tokens."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from cryptography.fernet import Fernet
from pydantic import SecretStr

from inflow.config.settings import KafkaSettings, PathSettings, S3Settings
from inflow.console.api import Console
from inflow.console.server import open_console, serve
from inflow.console.settings import ConsoleSettings
from inflow.local.process import free_port
from inflow.runtime import Runtime
from tests.support import wait_for


@dataclass
class RunningConsole:
    console: Console
    url: str
    admin_token: str
    session: requests.Session = field(default_factory=requests.Session)

    def call(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.session.request(method, self.url + path, headers=headers, timeout=90, **kwargs)

    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.call(method, path, self.admin_token, **kwargs)

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.admin(method, path, **kwargs)
        assert response.status_code < 300, (response.status_code, response.text)
        return response.json()


def runtime_for(
    kafka: KafkaSettings, s3: S3Settings, home: Path, config: dict[str, Any] | None = None
) -> Runtime:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "inflow.yaml"
    path.write_text(yaml.safe_dump(config or {}))
    paths = PathSettings(home=home, config=path, secret_key=SecretStr(Fernet.generate_key().decode()))
    return Runtime(paths=paths, kafka_settings=kafka, s3_settings=s3)


@pytest.fixture
def console_factory(
    catalogue_topics: KafkaSettings, s3_settings: S3Settings, tmp_path: Path
) -> Iterator[Callable[..., RunningConsole]]:
    """``console_factory(components={...}, config={...})`` serves a console; all stop at the end."""
    stops: list[Callable[[], None]] = []

    def make(
        components: dict[str, str] | None = None, config: dict[str, Any] | None = None
    ) -> RunningConsole:
        port = free_port()
        closed = {name: f"http://127.0.0.1:{free_port()}" for name in ("gateway", "poller", "worker", "sink")}
        settings = ConsoleSettings(
            port=port, components=closed | (components or {}), sample_interval_s=0.5, max_body_bytes=64 * 1024
        )
        rt = runtime_for(catalogue_topics, s3_settings, tmp_path / f"home-{port}", config)
        console, fresh = open_console(rt, settings)
        assert fresh is not None, "a fresh installation gets a bootstrap admin token"
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        thread = threading.Thread(
            target=lambda: loop.run_until_complete(serve(console, settings, stop, announce=False)),
            daemon=True,
        )
        thread.start()

        def shutdown() -> None:
            loop.call_soon_threadsafe(stop.set)
            thread.join(30)
            console.ops.close()
            console.tokens.stop()
            console.audit.close()

        stops.append(shutdown)
        running = RunningConsole(console, f"http://127.0.0.1:{port}", fresh)
        wait_for(lambda: _answers(running.url), 30, what="console to listen")
        return running

    yield make
    for stop in reversed(stops):
        stop()


def _answers(url: str) -> bool:
    try:
        return requests.get(url + "/health", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


@pytest.fixture
def con(console_factory: Callable[..., RunningConsole]) -> RunningConsole:
    return console_factory()
