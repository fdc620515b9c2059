"""Every admin operation of the console, each one calling the function the ``inflow`` command calls.

Methods are blocking (Kafka reads and acknowledged writes); the HTTP layer runs them on worker threads.
Bad input raises an :class:`~inflow.errors.InflowError` with the reason (answered 4xx); a missing object
raises :class:`~inflow.console.exceptions.NotFound`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from inflow.config.secrets import SecretBox
from inflow.console import topics as topic_info
from inflow.console.exceptions import BadRequest, NotFound
from inflow.kafka.clients import new_admin
from inflow.producers.s3_import import operations as import_ops
from inflow.producers.s3_import.exceptions import DefinitionError
from inflow.producers.s3_import.naming import shown
from inflow.producers.s3_import.preview import preview
from inflow.producers.s3_import.runs import RunStore
from inflow.producers.s3_import.store import DefinitionStore
from inflow.runtime import Runtime
from inflow.schemas.serde import AvroSerde
from inflow.sinks.streams import dlq as dlq_ops
from inflow.sinks.streams import operations as stream_ops
from inflow.sinks.streams.cli import yaml_definitions
from inflow.sinks.streams.control import ControlView, read_control
from inflow.sinks.streams.exceptions import DlqError
from inflow.sinks.streams.settings import SinkSettings
from inflow.workspaces.exceptions import WorkspaceNotFound
from inflow.workspaces.keys import generate_key
from inflow.workspaces.registry import WorkspaceRegistry, new_workspace

MAX_JOBS = 50  # import runs started from the console that are remembered


def _text(body: dict[str, Any], name: str, default: str | None = None) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or (default is None and not value):
        raise BadRequest(f"{name} must be a non-empty string")
    return value


def _int(body: dict[str, Any], name: str, default: int | None = None) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be a whole number, not {value!r}")
    return value


@dataclasses.dataclass
class ImportJob:
    """An import run started from the console, run on a thread of its own."""

    id: str
    import_name: str
    started_at: datetime
    state: str = "RUNNING"
    finished_at: datetime | None = None
    error: str | None = None
    files: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    not_owned: list[str] = dataclasses.field(default_factory=list)

    def public(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


class Operations:
    """The admin operations over one installation (its Kafka, its secret key, its YAML file)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.kafka = rt.kafka
        self.serde = AvroSerde(rt.kafka.schema_registry_url)
        self.box = SecretBox.from_settings(rt.paths)
        self.sink_settings = SinkSettings()
        self.workspaces = WorkspaceRegistry(self.kafka, self.serde)
        self.runs = RunStore(self.kafka, self.serde)
        self._definitions: DefinitionStore | None = None
        self._definitions_lock = threading.Lock()
        self.jobs: dict[str, ImportJob] = {}
        self._admin = new_admin(self.kafka)

    def start(self) -> Operations:
        self.workspaces.start()
        return self

    def close(self) -> None:
        self.workspaces.stop()
        self.runs.close()
        if self._definitions is not None:
            self._definitions.close()

    # --- workspaces -------------------------------------------------------------------------------
    def list_workspaces(self) -> list[dict[str, Any]]:
        return [w.public() for w in self.workspaces.all()]

    def _workspace(self, workspace_id: str) -> None:
        if self.workspaces.get(workspace_id) is None:
            raise NotFound(f"workspace {workspace_id} does not exist")

    def create_workspace(self, body: dict[str, Any]) -> dict[str, Any]:
        identifiers = body.get("identifiers", [])
        if not isinstance(identifiers, list) or not all(isinstance(i, str) for i in identifiers):
            raise BadRequest("identifiers must be a list of attribute names")
        key = body.get("key") or generate_key()
        if not isinstance(key, str):
            raise BadRequest("key must be a string")
        ws = new_workspace(
            _text(body, "workspace_id"),
            key,
            identifiers,
            _int(body, "users_per_minute", 10_000),
            _int(body, "events_per_minute", 30_000),
        )
        created = self.workspaces.create(ws)
        return {"workspace": created.public(), "data_api_key": key}

    def rotate_key(self, workspace_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self._workspace(workspace_id)
        key = body.get("key") or generate_key()
        if not isinstance(key, str):
            raise BadRequest("key must be a string")
        ws = self.workspaces.rotate_key(workspace_id, key)
        return {"workspace": ws.public(), "data_api_key": key}

    def set_disabled(self, workspace_id: str, disabled: bool) -> dict[str, Any]:
        self._workspace(workspace_id)
        return self.workspaces.set_disabled(workspace_id, disabled).public()

    def set_limits(self, workspace_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self._workspace(workspace_id)
        current = self.workspaces.get(workspace_id)
        assert current is not None
        users = _int(body, "users_per_minute", current.users_per_minute)
        events = _int(body, "events_per_minute", current.events_per_minute)
        try:
            return self.workspaces.set_limits(workspace_id, users, events).public()
        except WorkspaceNotFound as exc:
            raise NotFound(str(exc)) from exc

    # --- imports ----------------------------------------------------------------------------------
    def _store(self) -> DefinitionStore:
        if self._definitions is None:
            self._definitions = DefinitionStore(self.kafka, self.serde, self.box)
        self._definitions.load()
        return self._definitions

    def list_imports(self) -> dict[str, Any]:
        with self._definitions_lock:
            store = self._store()
            rows = [
                {
                    "name": d.name,
                    "workspace_id": d.workspace_id,
                    "type": d.sub_type,
                    "folder": f"s3://{d.bucket}/{d.folder}",
                    "file_prefix": d.prefix,
                    "schedule": d.schedule.every.value if d.schedule.every else "one-time",
                    "state": "ARCHIVED" if d.archived else "SCHEDULED",
                }
                for d in sorted(store.definitions.values(), key=lambda x: x.name)
            ]
            return {"imports": rows, "unreadable": dict(store.errors)}

    def _definition(self, name: str) -> Any:
        with self._definitions_lock:
            store = self._store()
            if name not in store.definitions:
                raise NotFound(f"no import named {name!r}")
            return store.definitions[name]

    def get_import(self, name: str) -> dict[str, Any]:
        return self._definition(name).public_dict()

    def create_import(self, body: dict[str, Any]) -> dict[str, Any]:
        definition = body.get("definition")
        replace = body.get("replace", False)
        if not isinstance(definition, dict):
            raise BadRequest("definition must be an object (one import definition)")
        if not isinstance(replace, bool):
            raise BadRequest("replace must be true or false")
        with self._definitions_lock:
            stored = import_ops.add_definition(self._store(), definition, where="definition", replace=replace)
        return stored.public_dict()

    def preview_import(self, name: str) -> dict[str, Any]:
        result = preview(self._definition(name), self.rt.s3.endpoint_url)
        return {
            "file_name": shown(result.file_name),
            "columns": result.columns,
            "samples": result.samples,
            "rows": result.rows,
        }

    def import_runs(self, name: str | None = None) -> list[dict[str, Any]]:
        """The MoEngage per-file columns as the poller records them, newest first."""
        if name is not None:
            self._definition(name)
        out = []
        for r in reversed(self.runs.history(name)):
            out.append(
                {
                    "run_id": r["run_id"],
                    "import_name": r["import_name"],
                    "file_name": shown(r["file_name"]),
                    "file_size": r["file_size"],
                    "started_at": r["started_at"].isoformat(),
                    "completed_at": r["completed_at"].isoformat() if r["completed_at"] else None,
                    "rows_total": r["rows_total"],
                    "rows_added": r["rows_added"],
                    "rows_updated": r["rows_updated"],
                    "rows_failed": r["rows_failed"],
                    "rows_skipped": r["rows_skipped"],
                    "status": r["status"],
                    "message": shown(r["message"]),
                    "error_report": bool(r.get("error_report_key")),
                }
            )
        return out

    def error_report(self, name: str, run_id: str) -> tuple[str, bytes]:
        d = self._definition(name)
        try:
            run = import_ops.find_run(self.runs, name, run_id)
        except DefinitionError as exc:
            raise NotFound(str(exc)) from exc
        return import_ops.error_report(d, run, self.rt.s3.endpoint_url)

    def trigger_run(self, name: str) -> dict[str, Any]:
        """Start the import now on a thread (what ``inflow imports run`` does); returns the job."""
        self._definition(name)
        job = ImportJob(uuid.uuid4().hex[:12], name, datetime.now(UTC))
        self.jobs[job.id] = job
        for old in sorted(self.jobs.values(), key=lambda j: j.started_at)[:-MAX_JOBS]:
            self.jobs.pop(old.id, None)
        threading.Thread(target=self._run_job, args=(job,), name=f"import-{name}", daemon=True).start()
        return job.public()

    def _run_job(self, job: ImportJob) -> None:
        try:
            summary = import_ops.run_now(self.kafka, self.box, job.import_name, self.rt.s3.endpoint_url)
            job.files = [
                {
                    k: v
                    for k, v in f.to_avro().items()
                    if k in ("file_name", "status", "rows_total", "message")
                }
                for f in summary.files
            ]
            job.skipped, job.not_owned, job.error = summary.skipped, summary.not_owned, summary.error
            job.state = "FAILED" if summary.error else "DONE"
        except Exception as exc:  # the job reports what stopped it; the console goes on
            job.state, job.error = "FAILED", f"{type(exc).__name__}: {exc}"
        job.finished_at = datetime.now(UTC)

    def job(self, job_id: str) -> dict[str, Any]:
        if job_id not in self.jobs:
            raise NotFound(f"no import job {job_id!r}")
        return self.jobs[job_id].public()

    # --- streams ----------------------------------------------------------------------------------
    def _view(self) -> ControlView:
        view = ControlView(yaml={d.id: d for d in yaml_definitions(self.rt.config)})
        return read_control(self.kafka, self.serde, view)

    def list_streams(self) -> list[dict[str, Any]]:
        return stream_ops.describe(self._view(), self.box, self.sink_settings)

    def get_stream(self, stream_id: str) -> dict[str, Any]:
        view = self._view()
        self._known(view, stream_id)
        found = next(
            s for s in stream_ops.describe(view, self.box, self.sink_settings) if s["id"] == stream_id
        )
        group = f"{self.kafka.topic_prefix}.streams.{stream_id}"
        progress = stream_ops.group_progress(self.kafka, group, self.kafka.topic("events"))
        return found | {
            "progress": progress,
            "lag": sum(p["lag"] for p in progress.values()),
            "retry_depth": stream_ops.retry_depth(self.kafka, stream_id),
            "dlq_depth": stream_ops.dlq_depth(self.kafka, self.serde, stream_id),
        }

    def _known(self, view: ControlView, stream_id: str) -> None:
        if stream_id not in view.definitions() and stream_id not in view.invalid_stored():
            raise NotFound(f"no stream {stream_id!r}")

    def define_stream(self, body: dict[str, Any]) -> dict[str, Any]:
        data = dict(body)
        replace = data.pop("replace", False)
        if not isinstance(replace, bool):
            raise BadRequest("replace must be true or false")
        definition, existed = stream_ops.define(
            self.kafka, self.serde, self._view(), self.box, data, replace=replace, settings=self.sink_settings
        )
        return {"stream": definition.public(self.box), "replaced": existed}

    def remove_stream(self, stream_id: str) -> dict[str, Any]:
        view = self._view()
        self._known(view, stream_id)
        stream_ops.remove(self.kafka, self.serde, view, stream_id)
        return {"removed": stream_id}

    def pause_stream(self, stream_id: str, body: dict[str, Any]) -> dict[str, Any]:
        view = self._view()
        self._known(view, stream_id)
        mode = body.get("mode")
        if mode is not None and not isinstance(mode, str):
            raise BadRequest("mode must be skip or resume")
        return {
            "stream": stream_id,
            "paused": True,
            "mode": stream_ops.pause(self.kafka, self.serde, view, stream_id, mode),
        }

    def resume_stream(self, stream_id: str) -> dict[str, Any]:
        view = self._view()
        self._known(view, stream_id)
        return {
            "stream": stream_id,
            "paused": False,
            "mode": stream_ops.resume(self.kafka, self.serde, view, stream_id),
        }

    def test_stream(self, stream_id: str) -> dict[str, Any]:
        view = self._view()
        self._known(view, stream_id)
        definition = stream_ops.find(view, stream_id)
        outcome = asyncio.run(stream_ops.test_endpoint(definition, self.box, self.sink_settings))
        return {
            "stream": stream_id,
            "result": outcome.result.value,
            "status": outcome.status,
            "reason": outcome.reason,
            "latency_s": round(outcome.latency_s, 3),
        }

    def dlq(self, stream_id: str | None = None) -> list[dict[str, Any]]:
        batches = dlq_ops.read_dlq(self.kafka, self.serde, stream_id)
        return [_jsonable(b.summary()) for b in batches]

    def dlq_batch(self, ident: str) -> dict[str, Any]:
        batches = dlq_ops.read_dlq(self.kafka, self.serde)
        try:
            found = dlq_ops.select(batches, [ident])
        except DlqError as exc:
            raise NotFound(str(exc)) from exc
        return _jsonable(found[0].detail())

    def redrive(self, body: dict[str, Any]) -> dict[str, Any]:
        ids = body.get("ids")
        stream = body.get("stream")
        all_ = body.get("all", False)
        if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
            raise BadRequest("ids must be a list of moe_request_ids or partition:offset positions")
        if stream is not None and not isinstance(stream, str):
            raise BadRequest("stream must be a stream id")
        if not isinstance(all_, bool):
            raise BadRequest("all must be true or false")
        done = stream_ops.redrive(self.kafka, self.serde, self._view(), ids, stream, all_)
        return {
            "redriven": [
                {
                    "position": b.position,
                    "stream_id": b.record["stream_id"],
                    "moe_request_id": b.record["moe_request_id"],
                }
                for b in done
            ]
        }

    # --- topics -----------------------------------------------------------------------------------
    def topics(self) -> list[dict[str, Any]]:
        return topic_info.catalogue_topics(self.kafka, self._admin)

    def consumer_groups(self) -> list[dict[str, Any]]:
        groups = topic_info.consumer_lag(self.kafka, self._admin)
        prefix = self.kafka.topic_prefix
        return [g | {"component": topic_info.component_of(g["group"], prefix)} for g in groups]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
