"""``inflow status``: every component's ``/health`` and every consumer group's lag, in one table.

Where each component answers comes from the ports ``inflow up`` chose (``$INFLOW_HOME/up.json``, written
while it runs), else from the settings (``INFLOW_GATEWAY_PORT`` 8080, ``INFLOW_POLLER_METRICS_PORT`` 9101,
``INFLOW_WORKER_METRICS_PORT`` 9102, ``INFLOW_SINK_METRICS_PORT`` 9103). A component that does not answer is
shown ``down``; the command then exits 1.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inflow.config.settings import KafkaSettings, ObservabilitySettings
from inflow.errors import InflowError
from inflow.kafka.lag import LagReader
from inflow.local.process import free_port, pid_alive

COMPONENTS = ("gateway", "poller", "worker", "sink")
UP_FILE = "up.json"


@dataclass
class ComponentHealth:
    name: str
    url: str
    state: str  # up | failing | down
    detail: str
    body: dict[str, Any] | None = None


@dataclass
class GroupLag:
    group: str
    lag: int
    partitions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class StatusReport:
    components: list[ComponentHealth]
    lag: list[GroupLag]
    kafka: str  # ok, or why the broker could not be read

    @property
    def healthy(self) -> bool:
        return self.kafka == "ok" and all(c.state == "up" for c in self.components)

    def as_json(self) -> dict[str, Any]:
        return {"healthy": self.healthy, **asdict(self)}


# --- where components listen ----------------------------------------------------------------------------
PORT_ENV = {
    "gateway": "INFLOW_GATEWAY_PORT",
    "poller": "INFLOW_POLLER_METRICS_PORT",
    "worker": "INFLOW_WORKER_METRICS_PORT",
    "sink": "INFLOW_SINK_METRICS_PORT",
}


def _local(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - compared, not bound


def configured_ports() -> dict[str, int]:
    """Each component's port from the settings (the gateway's API port serves its health and metrics)."""
    from inflow.producers.bulk_api.settings import GatewaySettings

    obs = ObservabilitySettings()
    return {"gateway": GatewaySettings().port} | {
        n: obs.metrics_port(n) for n in ("poller", "worker", "sink")
    }


def urls_for(ports: dict[str, int]) -> dict[str, str]:
    """Base URL of each component's ``/health`` and ``/metrics``."""
    from inflow.producers.bulk_api.settings import GatewaySettings

    hosts = {"gateway": _local(GatewaySettings().host)}
    metrics_host = _local(ObservabilitySettings().metrics_host)
    return {name: f"http://{hosts.get(name, metrics_host)}:{port}" for name, port in ports.items()}


def read_up_file(home: Path) -> dict[str, str] | None:
    """The URLs a running ``inflow up`` chose, or None when none runs."""
    try:
        data = json.loads((home / UP_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not pid_alive(int(data.get("pid", 0))):
        return None
    urls = data.get("components")
    return {str(k): str(v) for k, v in urls.items()} if isinstance(urls, dict) else None


def write_up_file(home: Path, urls: dict[str, str]) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / UP_FILE
    path.write_text(json.dumps({"pid": os.getpid(), "components": urls}, indent=2))
    return path


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could bind ``host:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def choose_ports(wanted: dict[str, int]) -> dict[str, int]:
    """Each component's port: the wanted one when free, else a free one (``inflow up`` beside another)."""
    return {name: port if port == 0 or port_free(port) else free_port() for name, port in wanted.items()}


# --- what they say ----------------------------------------------------------------------------------------
def component_health(name: str, url: str, timeout: float = 3.0) -> ComponentHealth:
    if not url.startswith(("http://", "https://")):
        return ComponentHealth(name, url, "down", "not an http(s) URL")
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as answer:  # noqa: S310 - checked
            code, raw = answer.status, answer.read(1_000_000)
    except urllib.error.HTTPError as exc:  # 503 and friends still carry the health document
        code, raw = exc.code, exc.read(1_000_000)
    except (OSError, ValueError) as exc:
        return ComponentHealth(name, url, "down", f"no answer ({type(exc).__name__})")
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return ComponentHealth(name, url, "failing", f"HTTP {code}, not a health document")
    ok = code == 200 and body.get("status") == "ok"
    return ComponentHealth(name, url, "up" if ok else "failing", _detail(body), body)


def _detail(body: dict[str, Any]) -> str:
    """Failing checks first; else every check's detail (the gateway: its views and Kafka)."""
    checks = body.get("checks")
    if isinstance(checks, dict):
        failing = [f"{k}: {v.get('detail')}" for k, v in checks.items() if not v.get("ok")]
        shown = failing or [f"{k}: {v.get('detail')}" for k, v in checks.items()]
        return "; ".join(shown)
    parts = []
    if isinstance(body.get("views"), dict):
        waiting = [k for k, v in body["views"].items() if not v]
        parts.append("views ready" if not waiting else f"views not ready: {', '.join(waiting)}")
    if "kafka" in body:
        parts.append(f"kafka: {body['kafka']}")
    return "; ".join(parts) or str(body.get("status", ""))


def group_lags(kafka: KafkaSettings) -> list[GroupLag]:
    """Lag of every consumer group named ``<prefix>.…``, from the broker."""
    reader = LagReader(kafka)
    try:
        out = []
        for group in reader.groups(f"{kafka.topic_prefix}."):
            parts = reader.lag(group)
            out.append(GroupLag(group, sum(p.lag for p in parts), [asdict(p) for p in parts]))
        return out
    finally:
        reader.close()


def collect(urls: dict[str, str], kafka: KafkaSettings) -> StatusReport:
    components = [component_health(name, url) for name, url in urls.items()]
    try:
        lag, state = group_lags(kafka), "ok"
    except InflowError as exc:
        lag, state = [], f"unreachable: {exc}"
    return StatusReport(components, lag, state)
