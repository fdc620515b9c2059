"""Gateway settings (env ``INFLOW_GATEWAY_*``); the defaults are MoEngage's limits and behaviour."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, IPvAnyNetwork
from pydantic_settings import BaseSettings, SettingsConfigDict

from inflow.config.identifiers import BLOCKED_CUSTOMER_IDS


class GatewaySettings(BaseSettings):
    """How the HTTP gateway listens, what it accepts and how long it waits for the broker."""

    model_config = SettingsConfigDict(env_prefix="INFLOW_GATEWAY_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    bulk_max_bytes: int = Field(100 * 1024, gt=0, description="MoEngage accepts 100 KB per Bulk Import call")
    single_max_bytes: int = Field(
        128 * 1024, gt=0, description="MoEngage accepts 128 KB per call of the other Data APIs"
    )
    bad_elements: Literal["accept_good", "reject_request"] = Field(
        "accept_good",
        description="accept_good: good elements are accepted and each bad one is listed in the answer; "
        "reject_request: any bad element rejects the whole request with its error",
    )
    delivery_timeout_ms: int = Field(10_000, gt=0, description="librdkafka message.timeout.ms; then 503")
    future_event_tolerance_s: int = Field(
        300,
        ge=0,
        description="events later than now plus this are rejected (MoEngage accepts no future-dated events)",
    )
    default_timezone_offset_s: int = Field(
        0, ge=-54_000, le=54_000, description="offset used when an event has none (account timezone)"
    )
    count_devices_as_users: bool = Field(False, description="whether device elements count as users")
    reject_reserved_prefix: bool = Field(True, description="reject unknown moe_ attribute and event names")
    blocked_customer_ids: tuple[str, ...] = BLOCKED_CUSTOMER_IDS
    export_per_minute: int = Field(1000, gt=0, description="Get User: users looked up per minute")
    export_max_identifiers: int = Field(20, gt=0, description="Get User: identifiers per request")
    rate_window_s: int = Field(60, gt=0)
    failed_logins_per_minute: int = Field(
        10,
        gt=0,
        description="failed logins allowed per client address and workspace per minute; then 429 with "
        "Retry-After (counted in each gateway's memory: N gateways admit up to N times as many)",
    )
    trusted_proxies: tuple[IPvAnyNetwork, ...] = Field(
        (),
        description="networks of the reverse proxies whose X-Forwarded-For names the client address "
        '(JSON list, e.g. ["10.0.0.0/8"]); from any other peer the header is ignored',
    )
    profile_store_dir: Path | None = Field(
        None,
        description="directory of Get User's on-disk profile store (default $INFLOW_HOME/gateway-profiles)",
    )
    profile_cache_mb: int = Field(
        32, gt=0, description="block cache of Get User's on-disk profile store, in MiB"
    )
    shutdown_timeout_s: float = Field(15.0, gt=0)
