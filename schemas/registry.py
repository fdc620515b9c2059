"""A tiny Confluent Schema Registry client (register, resolve by id) on ``urllib``, with caches.

Only the two calls the serde needs; a full client (compatibility settings, deletes) is out of scope.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Protocol

from inflow.schemas.exceptions import RegistryError

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class SchemaRegistry(Protocol):
    """What ``AvroSerde`` needs from a registry; tests pass an in-memory one."""

    def register(self, subject: str, schema_json: str) -> int:
        """Register (or look up) a schema under a subject and return its global id."""
        ...

    def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        """The schema JSON registered under a global id."""
        ...


class SchemaRegistryClient:
    """Confluent-compatible registry over HTTP; each answer is cached, ids are immutable."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self._base, self._auth = _split_url(url)
        self._timeout = timeout
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """Base URL without credentials, safe to log."""
        return self._base

    def register(self, subject: str, schema_json: str) -> int:
        """POST /subjects/{subject}/versions; idempotent on the registry side, cached here."""
        key = (subject, schema_json)
        with self._lock:
            cached = self._ids.get(key)
        if cached is not None:
            return cached
        path = f"/subjects/{urllib.parse.quote(subject, safe='')}/versions"
        answer = self._request("POST", path, {"schema": schema_json})
        schema_id = _int_field(answer, "id", path)
        with self._lock:
            self._ids[key] = schema_id
        return schema_id

    def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        """GET /schemas/ids/{id}; the schema comes back as a JSON string inside the answer."""
        with self._lock:
            cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        path = f"/schemas/ids/{schema_id}"
        answer = self._request("GET", path)
        schema = _avro_schema_field(answer, schema_id)
        with self._lock:
            self._schemas[schema_id] = schema
        return schema

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One JSON call; registry errors keep its error_code and message, 5xx and network errors retry."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": CONTENT_TYPE, **({"Content-Type": CONTENT_TYPE} if data else {})}
        if self._auth:
            headers["Authorization"] = self._auth
        # The scheme is checked to be http(s) in _split_url, so S310's file:/custom-scheme risk is excluded.
        request = urllib.request.Request(self._base + path, data=data, headers=headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:500]
            raise RegistryError(
                f"schema registry {self._base} answered {exc.code} to {method} {path}: {detail}",
                retriable=exc.code >= 500,
            ) from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise RegistryError(f"schema registry {self._base} unreachable: {exc}", retriable=True) from exc
        except ValueError as exc:
            raise RegistryError(f"schema registry {self._base} sent invalid JSON for {path}") from exc
        if not isinstance(answer, dict):
            raise RegistryError(f"schema registry {self._base} sent a non-object answer for {path}")
        return answer


def _split_url(url: str) -> tuple[str, str | None]:
    """Base URL without userinfo, and a Basic Authorization header built from it (never logged)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RegistryError(f"schema registry URL must be http(s)://host[:port], got scheme {parts.scheme!r}")
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    if parts.username is None:
        return base, None
    user_pass = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    return base, "Basic " + base64.b64encode(user_pass.encode()).decode()


def _int_field(answer: dict[str, Any], field: str, path: str) -> int:
    """A required integer of a registry answer."""
    value = answer.get(field)
    if not isinstance(value, int):
        raise RegistryError(f"schema registry answer to {path} lacks an integer {field!r}")
    return value


def _avro_schema_field(answer: dict[str, Any], schema_id: int) -> dict[str, Any]:
    """The Avro record schema of a GET /schemas/ids answer (other schema types are refused)."""
    schema_type = answer.get("schemaType", "AVRO")
    if schema_type != "AVRO":
        raise RegistryError(f"schema id {schema_id} is a {schema_type} schema, not Avro")
    try:
        schema = json.loads(answer["schema"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RegistryError(f"schema registry answer for id {schema_id} has no valid 'schema'") from exc
    if not isinstance(schema, dict):
        raise RegistryError(f"schema id {schema_id} is not an Avro record schema")
    return schema
