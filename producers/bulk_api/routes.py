"""HTTP handlers of the Data APIs, ``/health``, ``/metrics`` and ``/openapi.json``.

Order of checks per request: workspace id present, authentication, Content-Type, body size (from the
header, then while reading, always before parsing), JSON, envelope, elements, rate limit, broker ack.

Bad elements (``GatewaySettings.bad_elements``): with ``accept_good`` (default) every element is validated
first; the good ones are produced and the 200 answer lists each bad one as ``failed_elements`` with its
index and MoEngage's error; only when no element is good does the request fail with the first error's
body. With ``reject_request`` any bad element fails the whole request with that error. An element whose
record is over its topic's size limit is a bad element (413 "Payload too large"): it could never be stored.
"""

from __future__ import annotations

import base64
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from inflow.producers.bulk_api import file_imports
from inflow.producers.bulk_api.context import RequestContext, client_address, new_request_id
from inflow.producers.bulk_api.elements import INGEST_TOPIC, Outgoing, Validated
from inflow.producers.bulk_api.exceptions import ApiError, DeliveryError, RecordRejected
from inflow.producers.bulk_api.export import export_users, parse_export
from inflow.producers.bulk_api.gateway import Gateway
from inflow.producers.bulk_api.management import (
    delete_customer,
    identity_resolution_on,
    merge_pair,
    merge_pairs,
)
from inflow.producers.bulk_api.messages import (
    BULK,
    SINGLE,
    Texts,
    app_id_required,
    content_type_missing,
    empty_body,
    export_rate_limited,
    invalid,
    malformed_json,
    merge_refused,
    missing,
    not_an_object,
    payload_too_large,
    rate_limited,
    record_too_large,
    server_unavailable,
    unsupported_media_type,
    wrong_type,
)
from inflow.producers.bulk_api.openapi import openapi_document
from inflow.producers.bulk_api.portfolio import PARAM as PROJECT_CODE
from inflow.producers.bulk_api.portfolio import target_workspace
from inflow.producers.bulk_api.ratelimit import Decision
from inflow.workspaces.registry import Workspace

log = logging.getLogger(__name__)
ACCEPTED = "Your request has been accepted and will be processed soon."
GATEWAY_KEY = web.AppKey("gateway", Gateway)


@dataclass(slots=True)
class RequestState:
    """Per-request facts the middleware sets and the handlers fill in."""

    request_id: str
    received_at: datetime
    rate: Decision | None = None
    rate_primary: str | None = None
    client: str | None = None


STATE = web.RequestKey("state", RequestState)
# Served beside the Data API for operators; the OpenAPI document describes the Data API routes only.
OPERATIONS_PATHS = frozenset({"/health", "/metrics", "/openapi.json"})
# Content-Encodings accepted (what MoEngage's clients send); any other is a 415: aiohttp would pass an
# unknown one on undecoded, and drops the connection on a body that is not the deflate it claims.
CONTENT_ENCODINGS = frozenset({"identity", "gzip", "x-gzip"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def dumps(body: Any) -> str:
    return orjson.dumps(body).decode()


@web.middleware
async def envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, error bodies, rate-limit headers and metrics for every Data API response."""
    gateway = request.app[GATEWAY_KEY]
    state = request[STATE] = RequestState(new_request_id(), datetime.now(UTC))
    started = time.perf_counter()
    endpoint = request.match_info.route.name or "unknown"
    try:
        response = await handler(request)
    except ApiError as exc:
        response = web.json_response(
            {"status": "fail", "error": exc.error_body(state.request_id)}, status=exc.status, dumps=dumps
        )
        response.headers.update(exc.headers)
    except web.HTTPException as exc:  # aiohttp's own 404/405: keep MoEngage's error envelope
        error = ApiError(exc.status, exc.reason, exc.reason).error_body(request[STATE].request_id)
        response = web.json_response({"status": "fail", "error": error}, status=exc.status, dumps=dumps)
    except Exception:
        rid = request[STATE].request_id
        log.exception("request %s failed", rid, extra={"request_id": rid})
        error = ApiError(500, "ServerError", "Internal Server Error").error_body(request[STATE].request_id)
        response = web.json_response({"status": "fail", "error": error}, status=500, dumps=dumps)
    if state.rate is not None:
        response.headers.update(state.rate.headers(state.rate_primary))
    gateway.metrics.requests.labels(endpoint, str(response.status)).inc()
    gateway.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
    return response


class Handlers:
    """The Data API endpoints of one gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.settings = gateway.settings

    # shared steps --------------------------------------------------------------------------------------
    async def _authenticate(
        self,
        request: web.Request,
        workspace_id: str | None,
        primary: str,
        headers: Mapping[str, str] | None = None,
        project_required: bool = True,
    ) -> Workspace:
        """The workspace the call works on: the authenticated one, or the project of a portfolio that
        ``project_code`` names (portfolio.py); everything after this sees that workspace only."""
        if not workspace_id:
            raise app_id_required()
        authenticated = await self.gw.auth.authenticate(
            request.headers if headers is None else headers, workspace_id, self._client(request)
        )
        workspace = target_workspace(
            authenticated, request.query.getall(PROJECT_CODE, []), self.gw.directory.get, project_required
        )
        request[STATE].rate = self.gw.limiter.status(workspace.id, self._limits(workspace), time.time())
        request[STATE].rate_primary = primary
        return workspace

    def _limits(self, workspace: Workspace) -> dict[str, int]:
        return workspace.limits | {"exports": self.settings.export_per_minute}

    async def _json(self, request: web.Request, cap: int, texts: Texts) -> Any:
        content_type = request.headers.get("Content-Type")
        if content_type is None:
            raise content_type_missing()
        if request.content_type != "application/json":
            raise unsupported_media_type()
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in CONTENT_ENCODINGS:  # the server would otherwise pass the body on undecoded
            raise unsupported_media_type()
        if request.content_length is not None and request.content_length > cap:
            raise payload_too_large(cap)
        body = bytearray()
        try:
            async for chunk in request.content.iter_any():
                body += chunk
                if len(body) > cap:
                    raise payload_too_large(cap)
        except web.RequestPayloadError as exc:  # a Content-Encoding the body does not match
            raise malformed_json(texts) from exc
        if not body.strip():
            raise empty_body()
        try:  # orjson: strict RFC 8259 (no NaN), UTF-8 only, and several times faster than json
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise malformed_json(texts) from exc

    def _client(self, request: web.Request) -> str | None:
        """The client's address (``X-Forwarded-For`` only from a trusted proxy), computed once."""
        state = request[STATE]
        if state.client is None:
            forwarded = request.headers.get("X-Forwarded-For")
            state.client = client_address(forwarded, request.remote, self.settings.trusted_proxies) or ""
        return state.client or None

    def _context(self, request: web.Request, workspace: Workspace) -> RequestContext:
        return RequestContext(
            workspace.id,
            request[STATE].request_id,
            request[STATE].received_at,
            self._client(request),
            request.headers.get("Idempotency-Key") or None,
        )

    async def _admit_and_deliver(
        self,
        request: web.Request,
        workspace: Workspace,
        messages: list[Outgoing],
        users: int,
        events: int,
        groups: dict[bytes, list[bytes]] | None = None,
    ) -> None:
        """Rate limit (all or nothing), then wait for the broker to acknowledge every record: the
        ``messages``, or the ``ingest.records`` records ``groups`` holds by key (already size-checked)."""
        wanted = {"users": users, "events": events}
        decision = self.gw.limiter.acquire(workspace.id, wanted, self._limits(workspace), time.time())
        request[STATE].rate = decision
        if not decision.allowed:
            self.gw.metrics.rate_limited.labels(workspace.id).inc()
            raise rate_limited()
        try:
            if groups is None:
                await self.gw.delivery.deliver(messages, len(messages))
            else:
                await self.gw.delivery.deliver_groups(groups)
        except DeliveryError as exc:
            self.gw.limiter.refund(workspace.id, decision, wanted)
            request[STATE].rate = self.gw.limiter.status(workspace.id, self._limits(workspace), time.time())
            if isinstance(exc, RecordRejected):  # nothing was sent; the same request can never succeed
                raise record_too_large(exc.reason) from exc
            self.gw.metrics.delivery_failures.inc()
            rid = request[STATE].request_id
            log.warning("request %s: %s", rid, exc, extra={"request_id": rid})
            raise server_unavailable("The records could not be stored.") from exc
        per_topic: dict[str, int] = {}
        for msg in messages:
            per_topic[msg.topic] = per_topic.get(msg.topic, 0) + 1
        if groups is not None:
            per_topic[INGEST_TOPIC] = sum(map(len, groups.values()))
        for topic, n in per_topic.items():
            self.gw.metrics.records.labels(workspace.id, topic).inc(n)

    def _storable(self, result: Validated) -> Validated:
        """The element's records, if each fits its topic's size limit (else a 413 for this element)."""
        try:
            self.gw.delivery.check(result.messages)
        except RecordRejected as exc:
            raise record_too_large(exc.reason) from exc
        return result

    def _accepted(self, request: web.Request, extra: dict[str, Any] | None = None) -> web.Response:
        body = {"status": "success", "message": ACCEPTED, "request_id": request[STATE].request_id} | (
            extra or {}
        )
        return web.json_response(body, dumps=dumps)

    # endpoints -----------------------------------------------------------------------------------------
    async def transition(self, request: web.Request) -> web.Response:
        """Bulk Import: ``{"type":"transition","elements":[...]}``."""
        workspace_id = request.match_info.get("workspace_id") or request.query.get("app_id")
        workspace = await self._authenticate(request, workspace_id, "events")
        doc = await self._json(request, self.settings.bulk_max_bytes, BULK)
        elements = bulk_elements(doc)
        ctx = self._context(request, workspace)
        validate, identifiers, room = (
            self.gw.validator.element,
            workspace.identifiers,
            self.gw.delivery.room(),
        )
        groups: dict[bytes, list[bytes]] = {}  # each user's records, in the request's order
        users = events = 0
        failed: list[tuple[int, ApiError]] = []
        for index, element in enumerate(elements):
            try:
                result = validate(element, ctx, identifiers, BULK)
                if len(result.key) + max(map(len, result.values)) > room:
                    self._storable(result)  # the 413 naming the record over the limit
            except ApiError as exc:
                failed.append((index, exc))
                continue
            group = groups.get(result.key)
            if group is None:
                groups[result.key] = result.values
            else:
                group += result.values
            users += result.users
            events += result.events
        if failed:
            rejected = Counter(exc.type for _, exc in failed)
            for kind, n in rejected.items():
                self.gw.metrics.rejected.labels(workspace.id, kind).inc(n)
            if not groups or self.settings.bad_elements == "reject_request":
                raise failed[0][1]
        await self._admit_and_deliver(request, workspace, [], users, events, groups)
        extra = None
        if failed:
            extra = {
                "accepted_elements": len(elements) - len(failed),
                "failed_elements": [{"index": i, "error": _element_error(e)} for i, e in failed],
            }
        return self._accepted(request, extra)

    async def single(self, request: web.Request, kind: str) -> web.Response:
        """Track User / Track Event / Track Device: one element of the named type."""
        primary = "events" if kind == "event" else "users"
        workspace = await self._authenticate(request, request.match_info.get("workspace_id"), primary)
        doc = await self._json(request, self.settings.single_max_bytes, SINGLE)
        if not isinstance(doc, dict):
            raise not_an_object()
        if "type" not in doc:
            raise missing("type", SINGLE.not_found("type"))
        if doc["type"] != kind:
            raise invalid("type", f"type should be {kind}")
        ctx = self._context(request, workspace)
        handler = {
            "customer": self.gw.validator.customer,
            "event": self.gw.validator.event,
            "device": self.gw.validator.device,
        }[kind]
        try:
            result: Validated = self._storable(handler(doc, ctx, workspace.identifiers, SINGLE))
        except ApiError as exc:
            self.gw.metrics.rejected.labels(workspace.id, exc.type).inc()
            raise
        await self._admit_and_deliver(request, workspace, result.messages, result.users, result.events)
        return self._accepted(request)

    async def customer(self, request: web.Request) -> web.Response:
        return await self.single(request, "customer")

    async def event(self, request: web.Request) -> web.Response:
        return await self.single(request, "event")

    async def device(self, request: web.Request) -> web.Response:
        return await self.single(request, "device")

    async def merge(self, request: web.Request) -> web.Response:
        """Merge User: ``{"merge_data":[{"merged_user","retained_user"}]}``, one request record per pair."""
        workspace = await self._authenticate(request, request.query.get("app_id"), "users")
        doc = await self._json(request, self.settings.single_max_bytes, SINGLE)
        pairs = merge_pairs(doc)
        if identity_resolution_on(workspace.identifiers):
            raise merge_refused(workspace.identifiers)
        ctx = self._context(request, workspace)
        blocked = self.gw.validator.blocked_ids
        messages: list[Outgoing] = []
        failed: list[tuple[int, ApiError]] = []
        for index, pair in enumerate(pairs):
            try:
                merged, retained = merge_pair(pair, blocked)
            except ApiError as exc:
                failed.append((index, exc))
                self.gw.metrics.rejected.labels(workspace.id, exc.type).inc()
                continue
            messages.append(self.gw.requests.merge(ctx, merged, retained))
        if failed and (not messages or self.settings.bad_elements == "reject_request"):
            raise failed[0][1]
        await self._admit_and_deliver(request, workspace, messages, len(messages), 0)
        extra = None
        if failed:
            extra = {
                "accepted_elements": len(pairs) - len(failed),
                "failed_elements": [{"index": i, "error": _element_error(e)} for i, e in failed],
            }
        return self._accepted(request, extra)

    async def delete(self, request: web.Request) -> web.Response:
        """Delete User (erasure): ``{"customer_id": "..."}``; the request id is the audit reference."""
        workspace = await self._authenticate(request, request.query.get("app_id"), "users")
        doc = await self._json(request, self.settings.single_max_bytes, SINGLE)
        customer_id = delete_customer(doc, self.gw.validator.blocked_ids)
        message = self.gw.requests.delete(self._context(request, workspace), customer_id)
        await self._admit_and_deliver(request, workspace, [message], 1, 0)
        return self._accepted(request)

    async def devices_manage(self, request: web.Request) -> web.Response:
        """Device opt-out: block or unblock devices of one user (reference §3)."""
        workspace = await self._authenticate(request, request.query.get("app_id"), "users")
        doc = await self._json(request, self.settings.single_max_bytes, SINGLE)
        ctx = self._context(request, workspace)
        message = self.gw.requests.opt_out(ctx, doc, workspace.identifiers)
        await self._admit_and_deliver(request, workspace, [message], 1, 0)
        return self._accepted(request)

    async def test_connection(self, request: web.Request) -> web.Response:
        """Test connection: ``{app_id, app_secret, source, region}`` checked like a Basic Auth login."""
        doc = await self._json(request, self.settings.single_max_bytes, SINGLE)
        if not isinstance(doc, dict):
            raise not_an_object()
        for name in ("app_id", "app_secret", "source", "region"):
            value = doc.get(name)
            if value is not None and not isinstance(value, str):
                raise wrong_type(name, "string")
        app_id, secret = doc.get("app_id"), doc.get("app_secret")
        if not app_id:
            raise missing("app_id", "app_id is not found in the payload")
        if not secret:
            raise missing("app_secret", "app_secret is not found in the payload")
        token = base64.b64encode(f"{app_id}:{secret}".encode()).decode()
        workspace = await self._authenticate(
            request, app_id, "users", headers={"Authorization": f"Basic {token}"}, project_required=False
        )
        return web.json_response({"status": "success", "app_name": workspace.id}, dumps=dumps)

    async def export(self, request: web.Request) -> web.Response:
        """Get User, answered from the profile store (503 until it has read the profiles topic)."""
        workspace = await self._authenticate(request, request.query.get("app_id"), "exports")
        doc = await self._json(request, self.settings.single_max_bytes, SINGLE)
        wanted, fields = parse_export(doc, self.settings.export_max_identifiers)
        store = self.gw.profiles
        if not store.ready:
            raise ApiError(
                503,
                "ServiceUnavailable",
                f"Get User is not available yet: {store.problem}. Retry in a few seconds.",
            )
        decision = self.gw.limiter.acquire(
            workspace.id, {"exports": len(wanted)}, self._limits(workspace), time.time()
        )
        request[STATE].rate = decision
        if not decision.allowed:
            raise export_rate_limited()
        return web.json_response(export_users(store, workspace.id, wanted, fields), dumps=dumps)

    # operations ----------------------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        views = self.gw.views()
        for name, ok in views.items():
            self.gw.metrics.views_ready.labels(name).set(1 if ok else 0)
        ready = views["workspaces"]
        # The broker's error text can name hosts, listeners or the SASL user: it goes to the log only.
        body = {
            "status": "ok" if ready else "starting",
            "gateway_id": self.gw.gateway_id,
            "views": views,
            "kafka": "ok" if self.gw.delivery.available else "unavailable",
        }
        return web.json_response(body, status=200 if ready else 503, dumps=dumps)

    async def metrics(self, request: web.Request) -> web.Response:
        self.gw.views()
        return web.Response(
            body=generate_latest(self.gw.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document(self.settings), dumps=dumps)


def bulk_elements(doc: Any) -> list[Any]:
    """MoEngage's checks of the Bulk Import envelope, in its order: an object, ``type`` present and
    ``transition``, ``elements`` present, a list and not empty."""
    if not isinstance(doc, dict):
        raise not_an_object()
    kind = doc.get("type")
    if kind is None:
        raise missing("type", BULK.not_found("type"))
    if kind != "transition":
        raise invalid("type", "'type should be transition")
    elements = doc.get("elements")
    if elements is None:
        raise missing("elements", BULK.not_found("elements"))
    if not isinstance(elements, list):
        raise wrong_type("elements", "list")
    if not elements:
        raise missing("elements", "'elements cannot be empty array")
    return elements


def _element_error(exc: ApiError) -> dict[str, Any]:
    body: dict[str, Any] = {"attribute": exc.attribute} if exc.attribute else {}
    return body | {"message": exc.message, "type": exc.type}


def build_app(gateway: Gateway) -> web.Application:
    """The aiohttp application; bodies are read by the handlers themselves with their own caps."""
    app = web.Application(middlewares=[envelope], client_max_size=4 * 1024 * 1024)
    app[GATEWAY_KEY] = gateway
    h = Handlers(gateway)
    app.router.add_post("/v1/transition/{workspace_id}", h.transition, name="transition")
    app.router.add_post("/v1/transition", h.transition, name="transition_query")
    # Fixed paths before the templates: /v1/customer/merge is Merge User, never Track User of "merge".
    app.router.add_post("/v1/customer/merge", h.merge, name="merge")
    app.router.add_post("/v1/customer/delete", h.delete, name="delete")
    app.router.add_post("/v1/customer/{workspace_id}", h.customer, name="customer")
    app.router.add_post("/v1/event/{workspace_id}", h.event, name="event")
    app.router.add_post("/v1/device/{workspace_id}", h.device, name="device")
    app.router.add_post("/v1/customers/export", h.export, name="export")
    app.router.add_post("/v1/devices/manage", h.devices_manage, name="devices_manage")
    app.router.add_post("/v1/test-connection", h.test_connection, name="test_connection")
    app.router.add_get("/health", h.health, name="health")
    app.router.add_get("/metrics", h.metrics, name="metrics")
    app.router.add_get("/openapi.json", h.openapi, name="openapi")
    file_imports.register(
        app, gateway
    )  # File Imports API and aux lookup (producers/bulk_api/file_imports.py)
    return app
