"""MoEngage's File Imports API (§4.6, §4.8) and Inflow's auxiliary data lookup, on the gateway.

- ``POST /v1.0/data/fileimports/trigger/{schedule_id}``: run an import now (the schedule id is the import
  name). At most once every 5 minutes per import (400 ``ALREADY_EXISTS``); an unknown or archived import is
  400 ``NOT_FOUND``. The trigger is a ``triggered_at`` time written into the import's definition in
  ``control.imports``; every poller follows that topic and runs the import on its next tick.
- ``POST /v1.0/data/fileimports/import/status`` (Import Details): the workspace's imports, filtered.
- ``POST /v1.0/data/fileimports/import/run/history`` (Import File Run History): one import's files, from
  ``control.import-runs``, filtered by ``file_status`` and date, 50 per page (``offset`` 1-based,
  ``more_files`` "true"/"false").
- ``GET /v1/aux/{workspace_id}/{key}``: the latest auxiliary data row of a key (Inflow's own).

File Imports calls need ``MOE-APPKEY`` (the workspace id) beside Basic auth, with MoEngage's bodies for a
missing or mismatched header and a wrong key. Details and history take 50 requests a minute per workspace
(counted per gateway). The gateway does not import the poller: it reads the two control topics itself
(:class:`CompactedView`, followed from the first File Imports call) and shares the run-history item with
``inflow imports show --json`` through :mod:`inflow.imports.history`.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from inflow.imports import history
from inflow.imports.aux import lookup_aux
from inflow.kafka.errors import KafkaFault
from inflow.kafka.producer import KafkaProducer
from inflow.kafka.view import CompactedView
from inflow.producers.bulk_api.exceptions import ApiError
from inflow.producers.bulk_api.gateway import Gateway

BASE = "/v1.0/data/fileimports"
TRIGGER_EVERY = timedelta(minutes=5)
PER_MINUTE = 50
APP_KEY = "MOE-APPKEY"
BODY_CAP = 64 * 1024
NO_LINGER: dict[str, Any] = {"linger.ms": 0}  # one control record at a time
DATE_FORMATS = {
    "YYYY-MM-DD": "%Y-%m-%d",
    "YYYY/MM/DD": "%Y/%m/%d",
    "DD/MM/YYYY": "%d/%m/%Y",
    "DD-MM-YYYY": "%d-%m-%Y",
    "DD-MM-YYYY hh:mm:ss": "%d-%m-%Y %H:%M:%S",
    "DD/MM/YYYY hh:mm:ss": "%d/%m/%Y %H:%M:%S",
    "YYYY-MM-DD hh:mm:ss": "%Y-%m-%d %H:%M:%S",
    "YYYY/MM/DD hh:mm:ss": "%Y/%m/%d %H:%M:%S",
}
NO_IMPORT = {
    "status": "FAILURE",
    "error_type": "Import Doesn't Exist",
    "message": "No import exist in the database with the given query parameters.",
}


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda v: orjson.dumps(v).decode())


class Refused(Exception):
    """A File Imports answer other than 200, with its body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body)
        self.status, self.body = status, body


def fail(error_type: str, message: str, status: int = 400) -> Refused:
    return Refused(status, {"status": "fail", "error_type": error_type, "message": message})


def parse_date(value: Any, fmt: str | None, end: bool) -> datetime:
    """A filter date: MoEngage's formats, else ISO 8601; a date alone covers its whole day."""
    if not isinstance(value, str):
        raise fail("Invalid Date format", "dates must be strings")
    try:
        if fmt:
            if fmt not in DATE_FORMATS:
                raise ValueError(f"unsupported format {fmt!r}; supported: {', '.join(DATE_FORMATS)}")
            parsed = datetime.strptime(value, DATE_FORMATS[fmt])  # noqa: DTZ007 - UTC is set below
            day_only = "hh" not in fmt
        else:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            day_only = len(value) <= 10
    except ValueError as exc:
        raise fail(
            "Invalid Date format",
            f"Invalid Date format: {exc}. Use ISO 8601 (YYYY-MM-DDTHH:MM:SS.ssssss) or give 'format'",
        ) from None
    parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    if day_only and end:
        parsed += timedelta(days=1) - timedelta(microseconds=1)
    return parsed


def date_range(body: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    date = body.get("date")
    if date is None:
        return None, None
    if not isinstance(date, dict):
        raise fail("Invalid Date format", "date must be an object with start_date, end_date, format")
    fmt = date.get("format") or None
    start = parse_date(date["start_date"], fmt, False) if date.get("start_date") else None
    end = parse_date(date["end_date"], fmt, True) if date.get("end_date") else None
    return start, end


def offset_of(body: dict[str, Any]) -> int:
    raw = body.get("offset", 1)
    try:
        offset = int(raw)
    except (TypeError, ValueError):
        raise fail("INVALID_PARAMS", "offset must be a positive integer (1-based page number)") from None
    if offset < 1:
        raise fail("INVALID_PARAMS", "offset must be a positive integer (1-based page number)")
    return offset


def string_list(body: dict[str, Any], name: str, allowed: tuple[str, ...]) -> set[str] | None:
    values = body.get(name)
    if values is None or values == []:
        return None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise fail("INVALID_PARAMS", f"{name} must be a list of strings")
    bad = [v for v in values if v not in allowed]
    if bad:
        raise fail(
            "INVALID_PARAMS", f"{name}: unknown value(s) {', '.join(bad)}; allowed: {', '.join(allowed)}"
        )
    return set(values)


class FileImportsApi:
    """The handlers, the two followed control topics and the per-workspace request counts."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.definitions: CompactedView | None = None
        self.runs: CompactedView | None = None
        self._producer: KafkaProducer | None = None
        self._counts: dict[tuple[str, str, int], int] = {}

    # --- plumbing ---------------------------------------------------------------------------------
    def _views(self) -> tuple[CompactedView, CompactedView]:
        if self.definitions is None or self.runs is None:
            serde, topic = self.gw.serde, self.gw.kafka.topic
            self.definitions = CompactedView(
                self.gw.kafka,
                topic("control.imports"),
                name="file-imports-definitions",
                decode=lambda v: serde.decode(v, expected="ImportDefinition")[1],
            ).start()
            self.runs = CompactedView(
                self.gw.kafka,
                topic("control.import-runs"),
                name="file-imports-runs",
                decode=lambda v: serde.decode(v, expected="ImportRun")[1],
            ).start()
        return self.definitions, self.runs

    async def _ready(self) -> tuple[CompactedView, CompactedView]:
        definitions, runs = self._views()
        loop = asyncio.get_running_loop()
        for view in (definitions, runs):
            if not await loop.run_in_executor(None, view.wait_ready, 10.0):
                raise Refused(503, {"status": "fail", "error_type": "UNAVAILABLE", "message": view.problem})
        return definitions, runs

    async def _workspace(self, request: web.Request) -> str:
        """MOE-APPKEY and Basic auth, with the File Imports API's error bodies."""
        app_key = request.headers.get(APP_KEY)
        if not app_key:
            raise Refused(400, {"title": "HeaderMissing", "description": "MOE-APPKEY is missing in Header"})
        try:
            workspace = await self.gw.auth.authenticate(request.headers, None, request.remote)
        except ApiError as exc:
            if exc.type == "HeaderMismatch":
                raise Refused(401, {"title": "HeaderMismatch", "description": exc.message}) from None
            if exc.status == 401 and "mismatch" in exc.message:
                raise Refused(
                    401,
                    {
                        "title": "AuthenticationInvalid",
                        "description": "Password (APP_KEY) doesn't match the one available on the dashboard. "
                        "Kindly ensure the same APP_KEY available on the dashboard is used.",
                    },
                ) from None
            raise
        return workspace.id

    def _count(self, workspace_id: str, endpoint: str) -> None:
        window = int(time.time() // 60)
        key = (workspace_id, endpoint, window)
        self._counts = {k: v for k, v in self._counts.items() if k[2] == window}
        self._counts[key] = self._counts.get(key, 0) + 1
        if self._counts[key] > PER_MINUTE:
            raise fail("RATE_LIMIT_EXCEEDED", f"at most {PER_MINUTE} requests per minute", 429)

    async def _body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.content.read(BODY_CAP + 1)
        if len(raw) > BODY_CAP:
            raise fail("PAYLOAD_TOO_LARGE", f"the body must be at most {BODY_CAP} bytes", 413)
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise fail("INVALID_JSON", "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise fail("INVALID_JSON", "the body must be a JSON object")
        return body

    @staticmethod
    def _definition(record: dict[str, Any]) -> dict[str, Any]:
        try:
            data = json.loads(record["definition_json"])
        except ValueError:
            data = {}
        return data if isinstance(data, dict) else {}

    def _import_runs(self, runs: CompactedView, name: str) -> list[dict[str, Any]]:
        return sorted(
            (r for r in runs.data.values() if r["import_name"] == name),
            key=lambda r: r["started_at"],
            reverse=True,
        )

    async def _guard(self, request: web.Request, handler: Any) -> web.Response:
        try:
            response: web.Response = await handler(request)
            return response
        except Refused as exc:
            return _json(exc.body, exc.status)

    # --- trigger ----------------------------------------------------------------------------------
    async def trigger(self, request: web.Request) -> web.Response:
        return await self._guard(request, self._trigger)

    async def _trigger(self, request: web.Request) -> web.Response:
        workspace_id = await self._workspace(request)
        definitions, runs = await self._ready()
        name = request.match_info["schedule_id"]
        record = definitions.data.get(name)
        if record is None or record["workspace_id"] != workspace_id or record["archived"]:
            raise fail("NOT_FOUND", "This import is either deleted or expired.")
        data = self._definition(record)
        now = datetime.now(UTC)
        last = [r["started_at"] for r in self._import_runs(runs, name)[:1]]
        if data.get("triggered_at"):
            last.append(datetime.fromisoformat(data["triggered_at"]))
        if any(now - at < TRIGGER_EVERY for at in last):
            raise fail("ALREADY_EXISTS", "Import has run in the last 5 min.")
        data["triggered_at"] = now.isoformat()
        value = self.gw.serde.encode(
            "ImportDefinition", dict(record, definition_json=json.dumps(data, sort_keys=True), updated_at=now)
        )
        if self._producer is None:
            self._producer = KafkaProducer(self.gw.kafka, name="file-imports-trigger", **NO_LINGER)
        producer, topic = self._producer, self.gw.kafka.topic("control.imports")
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, producer.publish_and_wait, topic, name.encode(), value
            )
        except KafkaFault as exc:
            raise fail("UNAVAILABLE", f"the trigger was not stored, retry: {exc}", 503) from None
        definitions.data[name] = dict(record, definition_json=json.dumps(data, sort_keys=True))
        return _json({"status": "success", "message": "Triggered Import Successfully"})

    # --- import details ---------------------------------------------------------------------------
    async def status(self, request: web.Request) -> web.Response:
        return await self._guard(request, self._status)

    async def _status(self, request: web.Request) -> web.Response:
        workspace_id = await self._workspace(request)
        self._count(workspace_id, "status")
        body = await self._body(request)
        definitions, runs = await self._ready()
        types = string_list(body, "import_type", ("USERS", "EVENTS", "AUX_DATA"))
        schedules = string_list(body, "schedule_type", ("PERIODIC", "ONETIME"))
        sources = string_list(body, "file_source", ("SFTP", "S3", "CSV"))
        states = string_list(
            body,
            "schedule_status",
            ("SUCCESSFUL", "FAILED", "PARTIAL_SUCCESS", "SCHEDULED", "PROCESSING", "QUEUED", "ARCHIVED"),
        )
        start, end = date_range(body)
        offset = offset_of(body)
        name = body.get("import_name")
        items = []
        for record in sorted(definitions.data.values(), key=lambda r: r["created_at"], reverse=True):
            if record["workspace_id"] != workspace_id or (name and record["name"] != name):
                continue
            item = self._import_item(record, runs)
            if (
                (types and item["import_type"] not in types)
                or (schedules and item["schedule_type"] not in schedules)
                or (sources and item["file_source"] not in sources)
                or (states and item["schedule_status"] not in states)
                or (start and record["created_at"] < start)
                or (end and record["created_at"] > end)
            ):
                continue
            items.append(item)
        page, more = history.page(items, offset)
        return _json(
            {
                "status": "success",
                "total_count": len(items),
                "data": page,
                "offset": offset,
                "more_files": more,
            }
        )

    def _import_item(self, record: dict[str, Any], runs: CompactedView) -> dict[str, Any]:
        data = self._definition(record)
        files = self._import_runs(runs, record["name"])
        if record["archived"]:
            state = "ARCHIVED"
        elif not files:
            state = "SCHEDULED"
        else:
            live = [history.api_status(r["status"]) for r in files if r["status"] not in history.END_STATES]
            state = "PROCESSING" if "PROCESSING" in live else "QUEUED" if live else files[0]["status"]
        schedule = data.get("schedule") or {}
        return {
            "id": record["name"],
            "import_name": record["name"],
            "import_type": history.IMPORT_TYPES.get(str(data.get("type")), ""),
            "schedule_type": "PERIODIC" if schedule.get("kind") == "periodic" else "ONETIME",
            "file_source": "S3",
            "schedule_status": state,
            "created_at": history.timestamp(record["created_at"]),
            "last_run_at": history.timestamp(files[0]["started_at"]) if files else None,
            "files": len(files),
        }

    # --- run history ------------------------------------------------------------------------------
    async def run_history(self, request: web.Request) -> web.Response:
        return await self._guard(request, self._run_history)

    async def _run_history(self, request: web.Request) -> web.Response:
        workspace_id = await self._workspace(request)
        self._count(workspace_id, "history")
        body = await self._body(request)
        name = body.get("import_id") or body.get("import_name")
        if not isinstance(name, str) or not name:
            raise fail("INVALID_PARAMS", "import_id or import_name is required")
        statuses = string_list(body, "file_status", history.FILE_STATUSES)
        start, end = date_range(body)
        offset = offset_of(body)
        definitions, runs = await self._ready()
        record = definitions.data.get(name)
        if record is None or record["workspace_id"] != workspace_id:
            raise Refused(400, NO_IMPORT)
        items = [
            history.file_item(r)
            for r in self._import_runs(runs, name)
            if (not start or r["started_at"] >= start) and (not end or r["started_at"] <= end)
        ]
        if statuses:
            items = [i for i in items if i["file_status"] in statuses]
        page, more = history.page(items, offset)
        return _json(
            {
                "status": "success",
                "total_count": str(len(items)),
                "data": page,
                "offset": offset,
                "more_files": "true" if more else "false",
            }
        )

    # --- auxiliary data ---------------------------------------------------------------------------
    async def aux(self, request: web.Request) -> web.Response:
        workspace_id = request.match_info["workspace_id"]
        workspace = await self.gw.auth.authenticate(request.headers, workspace_id, request.remote)
        key = request.match_info["key"]
        try:
            item = await asyncio.get_running_loop().run_in_executor(
                None, lookup_aux, self.gw.kafka, self.gw.serde, workspace.id, key, 10.0
            )
        except KafkaFault as exc:
            raise ApiError(503, "ServerError", f"Auxiliary data cannot be read now, retry: {exc}") from None
        if item is None:
            raise ApiError(404, "NotFound", f"No auxiliary data with key {key!r}")
        return _json({"status": "success", "data": item})

    async def close(self, _app: web.Application) -> None:
        for view in (self.definitions, self.runs):
            if view is not None:
                view.stop()
        if self._producer is not None:
            self._producer.close()


def register(app: web.Application, gateway: Gateway) -> None:
    """Mount the File Imports API and the aux lookup on the gateway's app."""
    api = FileImportsApi(gateway)
    app.router.add_post(BASE + "/trigger/{schedule_id}", api.trigger, name="fileimports_trigger")
    app.router.add_post(BASE + "/import/status", api.status, name="fileimports_status")
    app.router.add_post(BASE + "/import/run/history", api.run_history, name="fileimports_history")
    app.router.add_get("/v1/aux/{workspace_id}/{key}", api.aux, name="aux")
    app.on_cleanup.append(api.close)


def _operation(
    summary: str, description: str, path_params: list[str], body: bool = True, app_key: bool = True
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "description": description,
        "parameters": [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in path_params
        ],
        "responses": {
            "200": {
                "description": "success",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "400": {"description": "bad request (error_type and message)"},
            "401": {"description": "authentication failed"},
        },
    }
    if body:
        op["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}},
        }
    if app_key:
        op["parameters"].append(
            {"name": APP_KEY, "in": "header", "required": True, "schema": {"type": "string"}}
        )
    return op


OPENAPI_PATHS: dict[str, Any] = {
    BASE + "/trigger/{schedule_id}": {
        "post": _operation(
            "Trigger File Import",
            "Runs the import now; once every 5 minutes per import (400 ALREADY_EXISTS), 400 NOT_FOUND for an "
            "unknown or archived import. MOE-APPKEY (the workspace id) and Basic auth.",
            ["schedule_id"],
            body=False,
        )
    },
    BASE + "/import/status": {
        "post": _operation(
            "Import Details",
            "The workspace's imports filtered by import_name, import_type, schedule_type, file_source, "
            "schedule_status and date; 50 per page (offset, 1-based); 50 requests a minute.",
            [],
        )
    },
    BASE + "/import/run/history": {
        "post": _operation(
            "Import File Run History",
            "One import's files (import_id or import_name), filtered by file_status and date; 50 per page "
            '(offset, 1-based), more_files "true"/"false"; 50 requests a minute.',
            [],
        )
    },
    "/v1/aux/{workspace_id}/{key}": {
        "get": _operation(
            "Auxiliary data by key",
            "The latest row an auxiliary data import stored for the key (Inflow's own endpoint).",
            ["workspace_id", "key"],
            body=False,
            app_key=False,
        )
    },
}
