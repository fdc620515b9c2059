"""The admin API under ``/api``: one table of routes (method, path, role, audit action), served by aiohttp
and described by the OpenAPI document built from the same table.

Authentication: ``Authorization: Bearer <admin token>``, or the console's session cookie (then a change
also needs the ``X-Inflow-Console`` header, which a cross-site form cannot send). The ``read`` role may call
every GET; a change needs ``admin`` (else 403). Every change, done or refused, is written to the audit log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from inflow.console.audit import AuditLog
from inflow.console.exceptions import BadRequest, ConsoleError, Forbidden, Unauthorized
from inflow.console.operations import Operations
from inflow.console.sampler import Sampler
from inflow.console.sessions import Sessions
from inflow.console.tokens import AdminToken, TokenStore
from inflow.errors import InflowError
from inflow.kafka.errors import KafkaFault, Kind
from inflow.sinks.streams.exceptions import UnknownStreamError
from inflow.workspaces.exceptions import WorkspaceNotFound

log = logging.getLogger(__name__)
Handler = Callable[[web.Request, "Console"], Awaitable[Any]]
CONSOLE_HEADER = "X-Inflow-Console"
TOKEN = web.RequestKey("token", AdminToken)


@dataclass
class Console:
    """What the handlers share: the operations, tokens, audit log, sessions and sampler."""

    ops: Operations
    tokens: TokenStore
    audit: AuditLog
    sessions: Sessions
    sampler: Sampler


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    action: str | None = None  # audit action of a change; None for reads
    body: str | None = None  # what the JSON body holds, for the OpenAPI document
    produces: str = "application/json"

    @property
    def role(self) -> str:
        return "read" if self.method == "GET" else "admin"


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.body_exists:
        return {}
    try:
        data = json.loads(await request.read())
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def _run(fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
    return asyncio.to_thread(fn, *args)


def _m(request: web.Request, name: str) -> str:
    return request.match_info[name]


# --- handlers -------------------------------------------------------------------------------------------
async def whoami(request: web.Request, c: Console) -> Any:
    token: AdminToken = request[TOKEN]
    return {"name": token.name, "role": token.role}


async def overview(request: web.Request, c: Console) -> Any:
    return c.sampler.overview()


async def health(request: web.Request, c: Console) -> Any:
    return {"components": c.sampler.components(), "problem": c.sampler.problem}


async def list_workspaces(request: web.Request, c: Console) -> Any:
    return {"workspaces": await _run(c.ops.list_workspaces)}


async def create_workspace(request: web.Request, c: Console) -> Any:
    return await _run(c.ops.create_workspace, await _body(request))


async def rotate_key(request: web.Request, c: Console) -> Any:
    return await _run(c.ops.rotate_key, _m(request, "workspace_id"), await _body(request))


async def disable_workspace(request: web.Request, c: Console) -> Any:
    return await _run(c.ops.set_disabled, _m(request, "workspace_id"), True)


async def enable_workspace(request: web.Request, c: Console) -> Any:
    return await _run(c.ops.set_disabled, _m(request, "workspace_id"), False)


async def set_limits(request: web.Request, c: Console) -> Any:
    return await _run(c.ops.set_limits, _m(request, "workspace_id"), await _body(request))


async def list_imports(request: web.Request, c: Console) -> Any:
    return await _run(c.ops.list_imports)


async def create_import(request: web.Request, c: Console) -> Any:
    return await _run(c.ops.create_import, await _body(request))


async def get_import(request: web.Request, c: Console) -> Any:
    return await _run(c.ops.get_import, _m(request, "name"))


async def preview_import(request: web.Request, c: Console) -> Any:
    return await _run(c.ops.preview_import, _m(request, "name"))


async def import_runs(request: web.Request, c: Console) -> Any:
    return {"runs": await _run(c.ops.import_runs, _m(request, "name"))}


async def all_runs(request: web.Request, c: Console) -> Any:
    return {"runs": await _run(c.ops.import_runs, None)}


async def trigger_run(request: web.Request, c: Console) -> Any:
    return web.json_response(await _run(c.ops.trigger_run, _m(request, "name")), status=202)


async def import_job(request: web.Request, c: Console) -> Any:
    return c.ops.job(_m(request, "job_id"))


async def error_report(request: web.Request, c: Console) -> Any:
    name, data = await _run(c.ops.error_report, _m(request, "name"), _m(request, "run_id"))
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)
    return web.Response(
        body=data,
        content_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{safe}"'},
    )


async def list_streams(request: web.Request, c: Console) -> Any:
    streams = await _run(c.ops.list_streams)
    rates = c.sampler.stream_rates()
    return {"streams": [s | {"delivery": rates.get(s["id"])} for s in streams]}


async def define_stream(request: web.Request, c: Console) -> Any:
    return web.json_response(await _run(c.ops.define_stream, await _body(request)), status=201)


async def get_stream(request: web.Request, c: Console) -> Any:
    stream_id = _m(request, "stream_id")
    found = await _run(c.ops.get_stream, stream_id)
    return found | {"delivery": c.sampler.stream_rates().get(stream_id)}


async def remove_stream(request: web.Request, c: Console) -> Any:
    return await _run(c.ops.remove_stream, _m(request, "stream_id"))


async def test_stream(request: web.Request, c: Console) -> Any:
    return await _run(c.ops.test_stream, _m(request, "stream_id"))


async def pause_stream(request: web.Request, c: Console) -> Any:
    return await _run(c.ops.pause_stream, _m(request, "stream_id"), await _body(request))


async def resume_stream(request: web.Request, c: Console) -> Any:
    return await _run(c.ops.resume_stream, _m(request, "stream_id"))


async def list_dlq(request: web.Request, c: Console) -> Any:
    stream = request.query.get("stream") or None
    return {"batches": await _run(c.ops.dlq, stream)}


async def dlq_batch(request: web.Request, c: Console) -> Any:
    return await _run(c.ops.dlq_batch, _m(request, "ident"))


async def redrive(request: web.Request, c: Console) -> Any:
    return await _run(c.ops.redrive, await _body(request))


async def list_topics(request: web.Request, c: Console) -> Any:
    return {"topics": await _run(c.ops.topics)}


async def list_groups(request: web.Request, c: Console) -> Any:
    return {"groups": await _run(c.ops.consumer_groups)}


async def list_tokens(request: web.Request, c: Console) -> Any:
    return {"tokens": [t.public() for t in c.tokens.all()]}


async def create_token(request: web.Request, c: Console) -> Any:
    body = await _body(request)
    name, role = body.get("name"), body.get("role", "read")
    if not isinstance(name, str) or not isinstance(role, str):
        raise BadRequest("name and role must be strings")
    text, token = await _run(c.tokens.create, name, role, request[TOKEN].name)
    return web.json_response({"token": text, **token.public()}, status=201)


async def revoke_token(request: web.Request, c: Console) -> Any:
    token = await _run(c.tokens.revoke, _m(request, "name"))
    return token.public()


async def audit_log(request: web.Request, c: Console) -> Any:
    try:
        limit = min(1000, max(1, int(request.query.get("limit", "100"))))
    except ValueError as exc:
        raise BadRequest("limit must be a whole number") from exc
    records = await _run(c.audit.recent, limit)
    return {"records": [r | {"at": r["at"].isoformat()} for r in records]}


ROUTES: list[Route] = [
    Route("GET", "/api/whoami", whoami, "The admin token of this request: name and role", "auth"),
    Route("GET", "/api/overview", overview, "Rates in and out, lag and errors per component", "overview"),
    Route("GET", "/api/health", health, "Health of every component (/health, /metrics)", "overview"),
    Route("GET", "/api/workspaces", list_workspaces, "List workspaces (never keys)", "workspaces"),
    Route(
        "POST",
        "/api/workspaces",
        create_workspace,
        "Create a workspace; its data API key is answered once",
        "workspaces",
        "workspace.create",
        "{workspace_id, key?, identifiers?, users_per_minute?, events_per_minute?}",
    ),
    Route(
        "POST",
        "/api/workspaces/{workspace_id}/rotate-key",
        rotate_key,
        "Replace a workspace's data API key; the new key is answered once",
        "workspaces",
        "workspace.rotate_key",
        "{key?}",
    ),
    Route(
        "POST",
        "/api/workspaces/{workspace_id}/disable",
        disable_workspace,
        "Suspend a workspace",
        "workspaces",
        "workspace.disable",
    ),
    Route(
        "POST",
        "/api/workspaces/{workspace_id}/enable",
        enable_workspace,
        "Lift a suspension",
        "workspaces",
        "workspace.enable",
    ),
    Route(
        "PUT",
        "/api/workspaces/{workspace_id}/limits",
        set_limits,
        "Change a workspace's rate limits",
        "workspaces",
        "workspace.limits",
        "{users_per_minute?, events_per_minute?}",
    ),
    Route("GET", "/api/imports", list_imports, "List import definitions", "imports"),
    Route(
        "POST",
        "/api/imports",
        create_import,
        "Add (or replace) an import definition; secrets are encrypted at rest",
        "imports",
        "import.create",
        "{definition: {...as in a definition file}, replace?}",
    ),
    Route("GET", "/api/import-runs", all_runs, "Run history of every import, newest first", "imports"),
    Route("GET", "/api/imports/{name}", get_import, "One import definition, secrets masked", "imports"),
    Route("GET", "/api/imports/{name}/preview", preview_import, "Top rows of the latest file", "imports"),
    Route(
        "GET",
        "/api/imports/{name}/runs",
        import_runs,
        "Per-file run history: rows total/added/updated/failed/skipped, status, message",
        "imports",
    ),
    Route(
        "POST",
        "/api/imports/{name}/run",
        trigger_run,
        "Run the import now (answered 202 with a job to follow)",
        "imports",
        "import.run",
    ),
    Route("GET", "/api/import-jobs/{job_id}", import_job, "A run started from the console", "imports"),
    Route(
        "GET",
        "/api/imports/{name}/runs/{run_id}/error-report",
        error_report,
        "The run's error report (CSV: row number and reason)",
        "imports",
        produces="text/csv",
    ),
    Route("GET", "/api/streams", list_streams, "List streams with state and delivery rate", "streams"),
    Route(
        "POST",
        "/api/streams",
        define_stream,
        "Define (or with replace, change) a stream",
        "streams",
        "stream.define",
        "{id, url, app_name?, workspace_id?, headers?, auth?, events?, ..., replace?}",
    ),
    Route(
        "GET",
        "/api/streams/{stream_id}",
        get_stream,
        "A stream: state, delivery rate, consumer lag, retry and DLQ depth",
        "streams",
    ),
    Route(
        "DELETE",
        "/api/streams/{stream_id}",
        remove_stream,
        "Remove a stored stream",
        "streams",
        "stream.remove",
    ),
    Route(
        "POST",
        "/api/streams/{stream_id}/test",
        test_stream,
        "Send one test event to the stream's endpoint and answer the outcome",
        "streams",
        "stream.test",
    ),
    Route(
        "POST",
        "/api/streams/{stream_id}/pause",
        pause_stream,
        "Pause a stream (mode skip or resume)",
        "streams",
        "stream.pause",
        "{mode?}",
    ),
    Route(
        "POST",
        "/api/streams/{stream_id}/resume",
        resume_stream,
        "Resume a stream",
        "streams",
        "stream.resume",
    ),
    Route("GET", "/api/dlq", list_dlq, "Dead batches (?stream= to filter)", "streams"),
    Route("GET", "/api/dlq/{ident}", dlq_batch, "One dead batch with its events and attempts", "streams"),
    Route(
        "POST",
        "/api/dlq/redrive",
        redrive,
        "Send dead batches again through the sink's retry path",
        "streams",
        "dlq.redrive",
        "{ids?: [moe_request_id | partition:offset], stream?, all?}",
    ),
    Route("GET", "/api/topics", list_topics, "Catalogue topics: partitions and end offsets", "topics"),
    Route("GET", "/api/consumer-groups", list_groups, "Consumer lag per group and partition", "topics"),
    Route("GET", "/api/tokens", list_tokens, "Admin tokens (never the tokens themselves)", "auth"),
    Route(
        "POST",
        "/api/tokens",
        create_token,
        "Create an admin token; it is answered once",
        "auth",
        "token.create",
        "{name, role: admin|read}",
    ),
    Route("POST", "/api/tokens/{name}/revoke", revoke_token, "Revoke an admin token", "auth", "token.revoke"),
    Route("GET", "/api/audit", audit_log, "The most recent changes: who, when, what (?limit=)", "auth"),
]


# --- errors, authentication, audit ----------------------------------------------------------------------
def status_of(exc: Exception) -> int:
    if isinstance(exc, ConsoleError):
        return exc.status
    if isinstance(exc, WorkspaceNotFound | UnknownStreamError):
        return 404
    if isinstance(exc, KafkaFault) and exc.kind is not Kind.PERMANENT:
        return 503
    return 400


def error_response(status: int, reason: str) -> web.Response:
    return web.json_response({"error": {"status": status, "reason": reason}}, status=status)


def identify(request: web.Request, c: Console) -> AdminToken:
    """The admin token of a request: a Bearer token, else the console session cookie."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("use Authorization: Bearer <admin token>")
        token = c.tokens.verify(value.strip())
        if token is None:
            raise Unauthorized("unknown or revoked admin token")
        return token
    token = c.sessions.token_of(request, c.tokens)
    if token is None:
        raise Unauthorized("log in: Authorization: Bearer <admin token> (data API keys are not accepted)")
    if request.method != "GET" and request.headers.get(CONSOLE_HEADER) != "1":
        raise Forbidden(f"a change made with the console's cookie needs the {CONSOLE_HEADER} header")
    return token


def target_of(request: web.Request, body: dict[str, Any] | None) -> str:
    """The changed object: the path's id, else the body's (an import definition's name)."""
    for name in ("workspace_id", "name", "stream_id", "ident"):
        if name in request.match_info:
            return request.match_info[name]
    body = body or {}
    fields: tuple[str, ...] = ("workspace_id", "id", "name", "stream")
    if isinstance(body.get("definition"), dict):
        body, fields = body["definition"], ("name",)
    for name in fields:
        value = body.get(name)
        if isinstance(value, str):
            return value
    return "-"


async def _peek_body(request: web.Request) -> dict[str, Any] | None:
    try:
        return await _body(request)
    except BadRequest:
        return None


def wrap(route: Route, console: Console) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        request_id = uuid.uuid4().hex[:16]
        token: AdminToken | None = None
        try:
            token = identify(request, console)
            request[TOKEN] = token
            if route.role == "admin" and token.role != "admin":
                raise Forbidden(f"admin token {token.name!r} has the read role; this change needs admin")
            result = await route.handler(request, console)
            response = result if isinstance(result, web.StreamResponse) else web.json_response(result)
            if route.action:
                await _audit(console, route, request, token, "ok", {}, request_id)
        except (InflowError, ValidationError) as exc:
            status = 400 if isinstance(exc, ValidationError) else status_of(exc)
            if route.action and token is not None:
                outcome = "refused" if status < 500 else "failed"
                await _audit(console, route, request, token, outcome, {"reason": str(exc)}, request_id)
            response = error_response(status, str(exc))
        response.headers["X-Request-Id"] = request_id
        return response

    return handle


async def _audit(
    c: Console,
    route: Route,
    request: web.Request,
    token: AdminToken,
    outcome: str,
    extra: dict[str, Any],
    request_id: str,
) -> None:
    body = await _peek_body(request)
    detail = {"method": route.method, "path": request.path, "body": body or {}} | extra
    assert route.action is not None
    await asyncio.to_thread(
        c.audit.record,
        actor=token.name,
        role=token.role,
        action=route.action,
        target=target_of(request, body),
        outcome=outcome,
        detail=detail,
        request_id=request_id,
    )


def add_routes(app: web.Application, console: Console) -> None:
    for route in ROUTES:
        app.router.add_route(route.method, route.path, wrap(route, console))
