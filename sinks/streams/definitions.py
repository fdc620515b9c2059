"""Stream definitions: where to send, what to send, how to authenticate, how to retry.

One pydantic model validates both the YAML ``streams:`` entries and the definitions added with
``inflow streams add`` (stored in the ``control.streams`` topic with their secrets encrypted).
"""

from __future__ import annotations

import base64
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from inflow.config.file import validate_section
from inflow.config.secrets import SecretBox
from inflow.sinks.streams.exceptions import StreamDefinitionError

DEFAULT_RETRY_DELAYS_S = (30.0, 60.0, 120.0)
MAX_RETRY_TIERS = 3  # one retry topic per tier: streams.retry.30s, .60s, .120s
PauseMode = Literal["skip", "resume"]


class StreamAuth(BaseModel):
    """No auth, HTTP Basic, or one static header (API key, bearer token): MoEngage's three options."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["none", "basic", "header"] = "none"
    username: str | None = None
    password: SecretStr | None = None
    header_name: str | None = None
    header_value: SecretStr | None = None

    @model_validator(mode="after")
    def _fields_match_type(self) -> StreamAuth:
        """Reject half-filled auth so a typo never silently sends unauthenticated requests."""
        if self.type == "basic" and (not self.username or self.password is None):
            raise ValueError("basic auth needs username and password")
        if self.type == "header" and (not self.header_name or self.header_value is None):
            raise ValueError("header auth needs header_name and header_value")
        if self.type != "basic" and (self.username or self.password is not None):
            raise ValueError(f"username/password are only for basic auth, not {self.type}")
        if self.type != "header" and (self.header_name or self.header_value is not None):
            raise ValueError(f"header_name/header_value are only for header auth, not {self.type}")
        return self

    def headers(self, box: SecretBox | None = None) -> dict[str, str]:
        """The Authorization (or custom) header, decrypting stored secrets with ``box``."""
        if self.type == "basic":
            assert self.username is not None and self.password is not None
            password = reveal(self.password, box)
            token = base64.b64encode(f"{self.username}:{password}".encode()).decode()
            return {"Authorization": f"Basic {token}"}
        if self.type == "header":
            assert self.header_name is not None and self.header_value is not None
            return {self.header_name: reveal(self.header_value, box)}
        return {}


class StreamDefinition(BaseModel):
    """One export: events of a workspace, filtered and enriched, POSTed in batches to one endpoint."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    url: str = Field(description="endpoint URL, query parameters included")
    workspace_id: str | None = Field(None, description="only this workspace's events; None exports every one")
    app_name: str = Field("", description="app_name of every request body")
    headers: dict[str, str] = Field(
        default_factory=dict, description="static headers sent with every request"
    )
    auth: StreamAuth = Field(default_factory=StreamAuth)
    events: Literal["all"] | list[str] = Field("all", description="event names or codes to export")
    user_attributes: Literal["all"] | list[str] = "all"
    device_attributes: Literal["all"] | list[str] = "all"
    batch_size: int = Field(100, ge=1, le=10_000)
    linger_s: float = Field(1.0, ge=0.0, le=600.0, description="send a partial batch after this long")
    request_timeout_s: float = Field(30.0, gt=0.0, le=600.0)
    max_in_flight: int = Field(4, ge=1, le=256, description="requests in flight at once per stream")
    retry_delays_s: list[float] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_DELAYS_S), min_length=0, max_length=MAX_RETRY_TIERS
    )
    paused: bool = Field(
        False, description="paused in the definition itself (pause state also lives in Kafka)"
    )
    pause_mode: PauseMode = Field("skip", description="default meaning of a pause: skip (MoEngage) or resume")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http(s) URL with a host, got {value!r}")
        return value

    @field_validator("retry_delays_s")
    @classmethod
    def _positive_delays(cls, value: list[float]) -> list[float]:
        if any(d < 0 for d in value):
            raise ValueError("retry delays must be >= 0 seconds")
        return value

    @field_validator("headers")
    @classmethod
    def _no_reserved_headers(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = {"content-type", "content-length", "host"}
        bad = sorted(k for k in value if k.lower() in reserved)
        if bad:
            raise ValueError(f"headers {bad} are set by the sink and cannot be configured")
        return value

    def request_headers(self, box: SecretBox | None = None) -> dict[str, str]:
        """Every header of a request: static headers, auth, and the JSON content type."""
        return {**self.headers, **self.auth.headers(box), "Content-Type": "application/json"}

    def stored(self, box: SecretBox) -> dict[str, Any]:
        """The JSON form kept in the control topic, every secret encrypted at rest."""
        data = self.model_dump(mode="json", exclude_none=True)
        auth = data.get("auth", {})
        if self.auth.password is not None:
            auth["password"] = seal(self.auth.password, box)
        if self.auth.header_value is not None:
            auth["header_value"] = seal(self.auth.header_value, box)
        return data

    def public(self) -> dict[str, Any]:
        """The JSON form safe to print: secrets masked."""
        return self.model_dump(mode="json", exclude_none=True)


def reveal(secret: SecretStr, box: SecretBox | None) -> str:
    """Plain text of a secret, decrypting ``enc:v1:`` values (CLI-added or pre-encrypted YAML values)."""
    value = secret.get_secret_value()
    if SecretBox.is_encrypted(value):
        if box is None:
            raise StreamDefinitionError("an encrypted stream secret needs the secret box key to be decrypted")
        return box.decrypt(value).get_secret_value()
    return value


def seal(secret: SecretStr, box: SecretBox) -> str:
    """Encrypted form of a secret; already-encrypted values are kept as they are."""
    value = secret.get_secret_value()
    return value if SecretBox.is_encrypted(value) else box.encrypt(value)


def parse_definition(data: dict[str, Any], where: str) -> StreamDefinition:
    """Validate one definition, raising :class:`StreamDefinitionError` naming unknown keys and bad fields."""
    from inflow.errors import ConfigError

    try:
        return validate_section(StreamDefinition, data, where)
    except ConfigError as exc:
        raise StreamDefinitionError(str(exc)) from exc
