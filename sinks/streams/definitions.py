"""Stream definitions: where to send, what to send, how to authenticate, how to retry.

One pydantic model validates both the YAML ``streams:`` entries and the definitions added with
``inflow streams add`` (stored in the ``control.streams`` topic with their secrets encrypted: the URL, the
static header values and the auth secrets). A definition may hold encrypted (``enc:v1:``) values, as read
from the control topic or written pre-encrypted in the YAML file; :meth:`StreamDefinition.revealed` turns
them into plain values with the secret box and validates them again, just before they are used.

Header names and values and the URL are refused when they hold CR, LF or another control character: such
a value would split or rewrite the request instead of being sent as written.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from inflow.config.file import validate_section
from inflow.config.secrets import SecretBox
from inflow.errors import ConfigError
from inflow.sinks.streams.addresses import BUILT_IN_ONLY, literal_host_verdict
from inflow.sinks.streams.exceptions import StreamDefinitionError
from inflow.sinks.streams.redact import MASK, mask_url

DEFAULT_RETRY_DELAYS_S = (30.0, 60.0, 120.0)
MAX_RETRY_TIERS = 3  # one retry topic per tier: streams.retry.30s, .60s, .120s
PauseMode = Literal["skip", "resume"]
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110)
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters but HTAB
URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")  # control characters and spaces


def check_http_url(value: str, name: str = "") -> None:
    """An http(s) URL with a host, no spaces or control characters, not a refused literal address."""
    what = f"{name} " if name else ""
    if URL_FORBIDDEN.search(value):
        raise ValueError(f"{what}must not contain spaces, CR, LF or other control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise ValueError(f"{what}is not a valid URL: {mask_url(value)}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what}must be an http(s) URL with a host, got {mask_url(value)!r}")
    verdict = literal_host_verdict(value, BUILT_IN_ONLY)
    if not verdict.allowed:
        raise ValueError(f"{what}{verdict.reason}" if what else verdict.reason)


def check_header_name(name: str) -> None:
    if not HEADER_NAME.match(name):
        raise ValueError(
            f"header name {name!r} must be an HTTP token (letters, digits, - and !#$%&'*+.^_`|~; "
            "no spaces, CR, LF or other control characters)"
        )


def check_header_value(name: str, value: str) -> None:
    """A header value with CR, LF or another control character is refused; the value is never shown."""
    if not SecretBox.is_encrypted(value) and CONTROL.search(value):
        raise ValueError(f"the value of header {name!r} contains CR, LF or another control character")


class StreamAuth(BaseModel):
    """No auth, HTTP Basic, one static header (API key, bearer token), or OAuth 2.0 client credentials:
    MoEngage's options (§5.2). With ``oauth2`` the sink fetches an access token from ``token_url``
    (``grant_type=client_credentials``), caches it and sends it as ``Authorization: Bearer``
    (:mod:`inflow.sinks.streams.destinations.oauth`)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["none", "basic", "header", "oauth2"] = "none"
    username: str | None = None
    password: SecretStr | None = None
    header_name: str | None = None
    header_value: SecretStr | None = None
    token_url: str | None = Field(None, description="oauth2: the token endpoint")
    client_id: str | None = Field(None, description="oauth2: the client id")
    client_secret: SecretStr | None = Field(None, description="oauth2: the client secret (stored encrypted)")
    scope: str | None = Field(None, description="oauth2: scope asked for, if the provider needs one")
    client_auth: Literal["basic", "body"] | None = Field(
        None,
        description="oauth2: client credentials in an HTTP Basic header (the default) or in the body",
    )

    @model_validator(mode="after")
    def _fields_match_type(self) -> StreamAuth:
        """Reject half-filled auth so a typo never silently sends unauthenticated requests."""
        if self.type == "basic" and (not self.username or self.password is None):
            raise ValueError("basic auth needs username and password")
        if self.type == "header" and (not self.header_name or self.header_value is None):
            raise ValueError("header auth needs header_name and header_value")
        if self.type == "oauth2" and (not self.token_url or not self.client_id or self.client_secret is None):
            raise ValueError("oauth2 auth needs token_url, client_id and client_secret")
        if self.type != "basic" and (self.username or self.password is not None):
            raise ValueError(f"username/password are only for basic auth, not {self.type}")
        if self.type != "header" and (self.header_name or self.header_value is not None):
            raise ValueError(f"header_name/header_value are only for header auth, not {self.type}")
        oauth = (self.token_url, self.client_id, self.client_secret, self.scope, self.client_auth)
        if self.type != "oauth2" and any(v is not None for v in oauth):
            raise ValueError(
                "token_url/client_id/client_secret/scope/client_auth are only for oauth2 auth, "
                f"not {self.type}"
            )
        if self.header_name is not None:
            check_header_name(self.header_name)
        if self.header_value is not None:
            check_header_value(self.header_name or "", self.header_value.get_secret_value())
        if self.username is not None and (CONTROL.search(self.username) or ":" in self.username):
            raise ValueError("username must not contain ':', CR, LF or another control character")
        if self.token_url is not None:
            check_http_url(self.token_url, "token_url")
        for name in ("client_id", "scope"):
            value = getattr(self, name)
            if value is not None and CONTROL.search(value):
                raise ValueError(f"{name} must not contain CR, LF or another control character")
        return self

    def revealed(self, box: SecretBox | None) -> dict[str, Any]:
        """The plain form (secrets decrypted with ``box``) as model input."""
        data: dict[str, Any] = self.model_dump(mode="python", exclude_none=True)
        if self.password is not None:
            data["password"] = reveal(self.password, box, "auth.password")
        if self.header_value is not None:
            data["header_value"] = reveal(self.header_value, box, "auth.header_value")
        if self.client_secret is not None:
            data["client_secret"] = reveal(self.client_secret, box, "auth.client_secret")
        return data

    def headers(self, box: SecretBox | None = None) -> dict[str, str]:
        """The Authorization (or custom) header, decrypting stored secrets with ``box``; none for oauth2,
        whose token is fetched and sent by the destination."""
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
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="static headers sent with every request (values are secrets)"
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
    start_at: datetime | None = Field(
        None,
        description="the stream exports events that reached the events topic from this time (UTC) on; "
        "`inflow streams add` sets it to the registration time (or --replay-from); unset: from the end of "
        "the topic when the stream first runs",
    )

    @field_validator("start_at")
    @classmethod
    def _aware_start(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a UTC offset (e.g. 2026-01-31T00:00:00Z)")
        return value

    @property
    def start_ms(self) -> int | None:
        """The start as epoch milliseconds (a record timestamp), or None: the end of the topic."""
        return None if self.start_at is None else int(self.start_at.timestamp() * 1000)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if SecretBox.is_encrypted(value):
            return value  # checked once decrypted (revealed)
        check_http_url(value)
        return value

    @field_validator("retry_delays_s")
    @classmethod
    def _positive_delays(cls, value: list[float]) -> list[float]:
        if any(d < 0 for d in value):
            raise ValueError("retry delays must be >= 0 seconds")
        return value

    @field_validator("headers")
    @classmethod
    def _no_reserved_headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        reserved = {"content-type", "content-length", "host"}
        bad = sorted(k for k in value if k.lower() in reserved)
        if bad:
            raise ValueError(f"headers {bad} are set by the sink and cannot be configured")
        for name, secret in value.items():
            check_header_name(name)
            check_header_value(name, secret.get_secret_value())
        return value

    def request_headers(self, box: SecretBox | None = None) -> dict[str, str]:
        """Every header of a request: static headers, auth, and the JSON content type."""
        static = {name: reveal(value, box, f"headers.{name}") for name, value in self.headers.items()}
        return {**static, **self.auth.headers(box), "Content-Type": "application/json"}

    def revealed(self, box: SecretBox | None) -> StreamDefinition:
        """This definition with every encrypted value decrypted, validated again (CR/LF, URL, address).

        Raises :class:`StreamDefinitionError` naming the field (never its value) when a secret cannot be
        decrypted (another INFLOW_SECRET_KEY, a corrupt record) or a decrypted value is refused."""
        where = f"stream {self.id}"
        data = self.model_dump(mode="python", exclude_none=True)
        try:
            data["url"] = reveal(SecretStr(self.url), box, "url")
            data["headers"] = {n: reveal(v, box, f"headers.{n}") for n, v in self.headers.items()}
            data["auth"] = self.auth.revealed(box)
        except StreamDefinitionError as exc:
            raise StreamDefinitionError(f"{where}: {exc}") from exc
        return parse_definition(data, where)

    def secret_values(self) -> list[str]:
        """Plain secret values (header values, auth secrets) of a revealed definition, for redaction."""
        values = [v.get_secret_value() for v in self.headers.values()]
        secrets = (self.auth.password, self.auth.header_value, self.auth.client_secret)
        values += [s.get_secret_value() for s in secrets if s is not None]
        if self.auth.type == "oauth2" and self.auth.client_id and self.auth.client_secret is not None:
            values.append(f"{self.auth.client_id}:{self.auth.client_secret.get_secret_value()}")
        if self.auth.type == "basic" and self.auth.username and self.auth.password is not None:
            values.append(f"{self.auth.username}:{self.auth.password.get_secret_value()}")
        return values

    def stored(self, box: SecretBox) -> dict[str, Any]:
        """The JSON form kept in the control topic: the URL, header values and auth secrets encrypted."""
        data = self.model_dump(mode="json", exclude_none=True)
        data["url"] = seal(SecretStr(self.url), box)
        data["headers"] = {name: seal(value, box) for name, value in self.headers.items()}
        auth = data.get("auth", {})
        if self.auth.password is not None:
            auth["password"] = seal(self.auth.password, box)
        if self.auth.header_value is not None:
            auth["header_value"] = seal(self.auth.header_value, box)
        if self.auth.client_secret is not None:
            auth["client_secret"] = seal(self.auth.client_secret, box)
        return data

    def public(self, box: SecretBox | None = None) -> dict[str, Any]:
        """The JSON form safe to print: every secret masked (``**********``), URL query values included.

        An encrypted URL is decrypted with ``box`` (when given) to show its host and path."""
        data = self.model_dump(mode="json", exclude_none=True)  # SecretStr dumps as "**********"
        url = self.url
        if SecretBox.is_encrypted(url) and box is not None:
            try:
                url = reveal(SecretStr(url), box, "url")
            except StreamDefinitionError:
                pass
        data["url"] = mask_url(url, MASK)
        return data


def starting(definition: StreamDefinition, replay_from: datetime | None, now: datetime) -> StreamDefinition:
    """A new stream's definition with its recorded start: ``now`` (MoEngage: a stream starts when it is
    set up, nothing older is exported), or ``replay_from`` (ours: replay retained events since then)."""
    if replay_from is not None:
        if replay_from.tzinfo is None:
            raise StreamDefinitionError("--replay-from needs a UTC offset (e.g. 2026-01-31T00:00:00Z)")
        if replay_from > now:
            raise StreamDefinitionError(f"--replay-from {replay_from.isoformat()} is in the future")
    return definition.model_copy(update={"start_at": replay_from or now})


def reveal(secret: SecretStr, box: SecretBox | None, field: str = "secret") -> str:
    """Plain text of a secret, decrypting ``enc:v1:`` values (CLI-added or pre-encrypted YAML values).

    Values stored in clear (written before secrets were encrypted) are taken as they are."""
    value = secret.get_secret_value()
    if SecretBox.is_encrypted(value):
        if box is None:
            raise StreamDefinitionError(
                f"{field}: an encrypted stream secret needs the secret box key to be decrypted"
            )
        try:
            return box.decrypt(value).get_secret_value()
        except ConfigError as exc:
            raise StreamDefinitionError(f"{field}: {exc}") from exc
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
