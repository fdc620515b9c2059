"""Settings of the Streams sink (environment ``INFLOW_SINK_*``): where its requests may go.

Requests to link-local and cloud metadata addresses are always refused (see
:mod:`inflow.sinks.streams.addresses`); private ranges are allowed by default, since self-hosted endpoints
are often internal. Operators narrow this further with a deny list, or with an allow list that then names
every network the sink may reach.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Network = IPv4Network | IPv6Network


class SinkSettings(BaseSettings):
    """Outbound policy of every stream's requests; networks are comma-separated CIDRs in the environment."""

    model_config = SettingsConfigDict(env_prefix="INFLOW_SINK_", extra="forbid")

    allow_networks: Annotated[tuple[Network, ...], NoDecode] = Field(
        (), description="when set, only these networks may be reached (the built-in refusals still apply)"
    )
    deny_networks: Annotated[tuple[Network, ...], NoDecode] = Field(
        (), description="networks never reached, on top of link-local and cloud metadata addresses"
    )

    @field_validator("allow_networks", "deny_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        """``10.0.0.0/8, 192.168.0.0/16`` (or a list); a host address stands for its own /32 or /128."""
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        try:
            return tuple(ip_network(v, strict=False) for v in value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not a list of networks (CIDR, comma-separated): {exc}") from exc
