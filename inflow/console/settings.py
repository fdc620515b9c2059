"""Console settings (env ``INFLOW_CONSOLE_*``) and where each component answers ``/health`` / ``/metrics``."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Metrics ports of the components that serve no Data API, when their own settings do not say otherwise.
DEFAULT_METRICS_PORTS = {"poller": 9101, "worker": 9102, "sink": 9103}


class ConsoleSettings(BaseSettings):
    """How the console listens, its bootstrap token, and the components it watches."""

    model_config = SettingsConfigDict(env_prefix="INFLOW_CONSOLE_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8090, ge=0, le=65535)
    token: SecretStr | None = Field(
        None, description="an admin token to accept (stored hashed as 'bootstrap' at start); else generated"
    )
    components: dict[str, str] = Field(
        default_factory=dict,
        description='JSON object {"gateway": "http://host:8080", ...}: base URLs of /health and /metrics; '
        "a component not named is looked for on 127.0.0.1 at its configured port",
    )
    sample_interval_s: float = Field(2.0, gt=0, description="how often rates and lag are sampled")
    probe_timeout_s: float = Field(2.0, gt=0, description="timeout of one /health or /metrics request")
    max_body_bytes: int = Field(1024 * 1024, gt=0, description="largest admin API request body")
    session_hours: float = Field(12.0, gt=0, description="how long a console login cookie lasts")


def _port_of(settings_class: Any, field: str) -> int | None:
    """A component's port from its own settings class, if it declares one (read from the environment)."""
    try:
        value = getattr(settings_class(), field, None)
    except Exception:  # a bad component setting is that component's problem, not the console's
        return None
    return value if isinstance(value, int) else None


def component_urls(settings: ConsoleSettings) -> dict[str, str]:
    """Base URL of every component: INFLOW_CONSOLE_COMPONENTS first, else loopback at its port."""
    from inflow.processors.settings import WorkerSettings
    from inflow.producers.bulk_api.settings import GatewaySettings
    from inflow.producers.s3_import.settings import PollerSettings
    from inflow.sinks.streams.settings import SinkSettings

    gateway = GatewaySettings()
    ports = {
        "gateway": gateway.port,
        "poller": _port_of(PollerSettings, "metrics_port") or DEFAULT_METRICS_PORTS["poller"],
        "worker": _port_of(WorkerSettings, "metrics_port") or DEFAULT_METRICS_PORTS["worker"],
        "sink": _port_of(SinkSettings, "metrics_port") or DEFAULT_METRICS_PORTS["sink"],
    }
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    return urls | {name: url.rstrip("/") for name, url in settings.components.items()}
