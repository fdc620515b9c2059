"""``inflow sink`` and ``inflow streams add|list|show|status|pause|resume|remove|dlq``.

Every command shows a stream's secrets masked: header values, auth secrets, the URL's password and query
values (``**********``). ``status`` says which streams are held and why, as far as this process can tell
with its own INFLOW_SECRET_KEY and INFLOW_SINK_* settings (the running sink logs its own holds).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from inflow.config.file import InflowFile
from inflow.config.secrets import SecretBox
from inflow.config.settings import KafkaSettings
from inflow.runtime import Runtime
from inflow.schemas.serde import AvroSerde
from inflow.sinks.streams import dlq as dlq_ops
from inflow.sinks.streams import operations as ops
from inflow.sinks.streams.control import (
    ControlView,
    pause_view,
    read_control,
)
from inflow.sinks.streams.definitions import StreamDefinition, parse_definition
from inflow.sinks.streams.exceptions import StreamDefinitionError
from inflow.sinks.streams.settings import SinkSettings
from inflow.sinks.streams.sink import StreamSink, serve

UP_PROCESSES: list[tuple[str, list[str]]] = [("sink", ["sink"])]
# ``inflow config check`` validates and masks the YAML file's ``streams`` section with this.
CONFIG_SECTIONS: dict[str, Any] = {"streams": lambda entries: config_sections(entries)}
console = Console()
streams_app = typer.Typer(
    help="MoEngage-style Streams: export enriched events to HTTP endpoints.", no_args_is_help=True
)
dlq_app = typer.Typer(
    help="The dead-letter queue of batches that failed every attempt.", no_args_is_help=True
)
streams_app.add_typer(dlq_app, name="dlq")


def register(app: typer.Typer) -> None:
    """Add ``inflow sink`` and ``inflow streams ...`` to the main CLI."""
    app.command("sink")(sink)
    app.add_typer(streams_app, name="streams")


def yaml_definitions(config: InflowFile) -> list[StreamDefinition]:
    """The ``streams:`` section, each entry validated by the stream model (unknown keys named)."""
    defs = [parse_definition(entry, f"streams[{i}]") for i, entry in enumerate(config.streams)]
    _no_duplicates(defs)
    return defs


def config_sections(streams: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The YAML ``streams`` entries validated by the stream model (a bad entry raises
    :class:`StreamDefinitionError` naming it, ``streams[1]: ...``), as JSON-able dicts with every secret
    masked as ``**********``: passwords, header values, auth values, the URL's password and query values."""
    definitions = [parse_definition(entry, f"streams[{i}]") for i, entry in enumerate(streams)]
    _no_duplicates(definitions)
    return [d.public() for d in definitions]


def _no_duplicates(definitions: list[StreamDefinition]) -> None:
    seen: set[str] = set()
    for d in definitions:
        if d.id in seen:
            raise StreamDefinitionError(f"streams: id {d.id!r} is defined twice")
        seen.add(d.id)


def _context() -> tuple[Runtime, KafkaSettings, AvroSerde, ControlView]:
    rt = Runtime()
    serde = AvroSerde(rt.kafka.schema_registry_url)
    view = ControlView(yaml={d.id: d for d in yaml_definitions(rt.config)})
    read_control(rt.kafka, serde, view)
    return rt, rt.kafka, serde, view


def sink(
    stream: Annotated[list[str] | None, typer.Option(help="run only these stream ids (repeatable)")] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="port of /metrics and /health (default INFLOW_SINK_METRICS_PORT or 9103)"),
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
) -> None:
    """Run the Streams sink: every stream's events to its endpoint, with retries and DLQ, until SIGTERM."""
    from inflow.observability.component import serve_component
    from inflow.observability.logs import configure_logging

    configure_logging("sink", log_level)
    rt = Runtime()
    streams = StreamSink(
        rt.kafka,
        yaml_definitions(rt.config),
        SecretBox.from_settings(rt.paths),
        only=set(stream) if stream else None,
        settings=SinkSettings(),
    )
    served = serve_component(
        "sink",
        rt.kafka,
        port=metrics_port,
        group_prefixes=(f"{rt.kafka.topic_prefix}.streams.",),
        checks={"loop": streams.heartbeat, "streams": streams.streams_check},
    )
    try:
        asyncio.run(serve(streams))
    finally:
        served.stop()


def _split_list(value: str | None) -> str | list[str]:
    if value is None or value.strip().lower() == "all":
        return "all"
    return [v.strip() for v in value.split(",") if v.strip()]


@streams_app.command("add")
def add(
    stream_id: Annotated[str, typer.Argument(help="stream id (letters, digits, _ . -)")],
    url: Annotated[str, typer.Option(help="endpoint URL with its query parameters")],
    app_name: Annotated[str, typer.Option(help="app_name of every request")] = "",
    workspace: Annotated[str | None, typer.Option(help="only this workspace's events")] = None,
    header: Annotated[list[str] | None, typer.Option(help="static header 'Name: value' (repeatable)")] = None,
    auth: Annotated[str, typer.Option(help="none, basic, header or oauth2 (client credentials)")] = "none",
    username: Annotated[str | None, typer.Option(help="Basic auth username")] = None,
    password: Annotated[
        str | None,
        typer.Option(envvar="INFLOW_STREAM_PASSWORD", help="Basic auth password (stored encrypted)"),
    ] = None,
    auth_header: Annotated[str | None, typer.Option(help="header auth: header name, e.g. X-Api-Key")] = None,
    auth_value: Annotated[
        str | None,
        typer.Option(envvar="INFLOW_STREAM_AUTH_VALUE", help="header auth: value (stored encrypted)"),
    ] = None,
    token_url: Annotated[str | None, typer.Option(help="oauth2: the token endpoint URL")] = None,
    client_id: Annotated[str | None, typer.Option(help="oauth2: client id")] = None,
    client_secret: Annotated[
        str | None,
        typer.Option(envvar="INFLOW_STREAM_CLIENT_SECRET", help="oauth2: client secret (stored encrypted)"),
    ] = None,
    scope: Annotated[str | None, typer.Option(help="oauth2: scope to ask for")] = None,
    client_auth: Annotated[
        str | None,
        typer.Option(help="oauth2: client credentials in a 'basic' header (default) or in the 'body'"),
    ] = None,
    events: Annotated[str, typer.Option(help="'all' or comma-separated event names or codes")] = "all",
    user_attributes: Annotated[str, typer.Option(help="'all' or comma-separated user attributes")] = "all",
    device_attributes: Annotated[
        str, typer.Option(help="'all' or comma-separated device attributes")
    ] = "all",
    batch_size: Annotated[int, typer.Option(help="events per request")] = 100,
    linger: Annotated[float, typer.Option(help="seconds before a partial batch is sent")] = 1.0,
    timeout: Annotated[float, typer.Option(help="request timeout in seconds")] = 30.0,
    max_in_flight: Annotated[int, typer.Option(help="requests in flight at once")] = 4,
    retry_delays: Annotated[str, typer.Option(help="comma-separated retry delays in seconds")] = "30,60,120",
    pause_mode: Annotated[
        str,
        typer.Option(
            help="skip (MoEngage: events during a pause are not sent) or resume (send them on resume)"
        ),
    ] = "skip",
    replace: Annotated[bool, typer.Option(help="replace an existing stored definition")] = False,
    replay_from: Annotated[
        str | None,
        typer.Option(
            help="ISO 8601 time (UTC if no offset): a new stream also sends the retained events that "
            "arrived since then (default: only events from now on, as MoEngage)"
        ),
    ] = None,
) -> None:
    """Add (or with --replace, change) a stream; secrets are encrypted before they are stored in Kafka.

    A new stream sends the events that arrive from now on (MoEngage streams start when they are set up);
    ``--replay-from`` makes it start at an earlier time instead. A replaced stream keeps its position."""
    rt, kafka, serde, view = _context()
    headers = {}
    for h in header or []:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise StreamDefinitionError(f"--header {h!r} must look like 'Name: value'")
        headers[name.strip()] = value.strip()
    auth_data: dict[str, Any] = {"type": auth}
    given = {
        "username": username,
        "password": password,
        "header_name": auth_header,
        "header_value": auth_value,
        "token_url": token_url,
        "client_id": client_id,
        "client_secret": client_secret,
        "scope": scope,
        "client_auth": client_auth,
    }
    auth_data.update({key: value for key, value in given.items() if value is not None})
    try:
        delays = [float(d) for d in retry_delays.split(",") if d.strip()]
    except ValueError as exc:
        raise StreamDefinitionError(
            f"--retry-delays {retry_delays!r} must be numbers separated by commas"
        ) from exc
    data = {
        "id": stream_id,
        "url": url,
        "app_name": app_name,
        "workspace_id": workspace,
        "headers": headers,
        "auth": auth_data,
        "events": _split_list(events),
        "user_attributes": _split_list(user_attributes),
        "device_attributes": _split_list(device_attributes),
        "batch_size": batch_size,
        "linger_s": linger,
        "request_timeout_s": timeout,
        "max_in_flight": max_in_flight,
        "retry_delays_s": delays,
        "pause_mode": pause_mode,
    }
    _, existed = ops.define(
        kafka, serde, view, SecretBox.from_settings(rt.paths), data, replace=replace, replay_from=replay_from
    )
    console.print(f"stream {stream_id} {'replaced' if existed else 'added'}")


_find = ops.find
hold_reasons = ops.hold_reasons


@streams_app.command("remove")
def remove(stream_id: Annotated[str, typer.Argument(help="stream id")]) -> None:
    """Remove a stream added with ``streams add`` (YAML streams are removed from the file)."""
    _, kafka, serde, view = _context()
    ops.remove(kafka, serde, view, stream_id)
    console.print(f"stream {stream_id} removed")


@streams_app.command("list")
def list_streams() -> None:
    """List every stream with its source (yaml or stored), endpoint (secrets masked), events and state."""
    rt, _, _, view = _context()
    box = SecretBox.from_settings(rt.paths)
    holds = hold_reasons(view, box, SinkSettings())
    table = Table("id", "source", "url", "events", "batch", "retries (s)", "state")
    for stream_id, d in sorted(view.definitions().items()):
        events = d.events if isinstance(d.events, str) else ",".join(d.events)
        source = "yaml" if stream_id in view.yaml else "stored"
        delays = ",".join(f"{x:g}" for x in d.retry_delays_s)
        url = d.public(box)["url"]
        table.add_row(
            stream_id, source, url, events, str(d.batch_size), delays, _state(view, holds, stream_id)
        )
    for stream_id in sorted(view.invalid_stored()):
        table.add_row(stream_id, "stored", "**********", "", "", "", "held")
    console.print(table)


_state = ops.state_of


@streams_app.command("status")
def status() -> None:
    """Each stream's state (running, paused, held) and why a held stream does not deliver."""
    rt, _, _, view = _context()
    holds = hold_reasons(view, SecretBox.from_settings(rt.paths), SinkSettings())
    ids = sorted({*view.definitions(), *view.invalid_stored()})
    for stream_id in ids:
        if stream_id in holds:
            line = f"{stream_id}: held: {holds[stream_id]}"
        else:
            line = f"{stream_id}: {_state(view, holds, stream_id)}"
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(f"{len(ids)} streams, {len(holds)} held", markup=False, highlight=False)


@streams_app.command("show")
def show(stream_id: Annotated[str, typer.Argument(help="stream id")]) -> None:
    """Show a stream's definition (secrets masked), pause state and consumer-group progress."""
    rt, kafka, _, view = _context()
    d = _find(view, stream_id)
    state = view.states.get(stream_id)
    box = SecretBox.from_settings(rt.paths)
    out = {
        "definition": d.public(box),
        "held": hold_reasons(view, box, SinkSettings()).get(stream_id),
        "source": "yaml" if stream_id in view.yaml else "stored",
        "state": dataclasses.asdict(pause_view(d, state)),
        "state_record": state,
        "progress": group_progress(kafka, f"{kafka.topic_prefix}.streams.{stream_id}", kafka.topic("events")),
    }
    console.print_json(json.dumps(out, default=str))


group_progress = ops.group_progress


@streams_app.command("pause")
def pause(
    stream_id: Annotated[str, typer.Argument(help="stream id")],
    mode: Annotated[
        str | None,
        typer.Option(
            help="skip (MoEngage: events during the pause are never sent) "
            "or resume; default: the stream's pause_mode"
        ),
    ] = None,
) -> None:
    """Pause a stream: nothing is sent until ``streams resume``."""
    _, kafka, serde, view = _context()
    chosen = ops.pause(kafka, serde, view, stream_id, mode)
    console.print(f"stream {stream_id} paused ({chosen})")


@streams_app.command("resume")
def resume(stream_id: Annotated[str, typer.Argument(help="stream id")]) -> None:
    """Resume a paused stream; in skip mode the events that arrived during the pause are not sent."""
    _, kafka, serde, view = _context()
    mode = ops.resume(kafka, serde, view, stream_id)
    console.print(f"stream {stream_id} resumed ({mode})")


@dlq_app.command("list")
def dlq_list(stream: Annotated[str | None, typer.Option(help="only this stream's batches")] = None) -> None:
    """List dead batches: position, stream, request id, events, attempts, last error."""
    rt = Runtime()
    batches = dlq_ops.read_dlq(rt.kafka, AvroSerde(rt.kafka.schema_registry_url), stream)
    table = Table("position", "stream", "moe_request_id", "events", "attempts", "last status", "last error")
    for b in batches:
        s = b.summary()
        cells = [s["position"], s["stream_id"], s["moe_request_id"], str(s["events"]), str(s["attempts"])]
        table.add_row(*cells, str(s["last_status"]), s["last_error"])
    console.print(table)
    console.print(f"{len(batches)} dead batches")


@dlq_app.command("show")
def dlq_show(ident: Annotated[str, typer.Argument(help="moe_request_id or partition:offset")]) -> None:
    """Show one dead batch with its events and every attempt's status and error."""
    rt = Runtime()
    batches = dlq_ops.read_dlq(rt.kafka, AvroSerde(rt.kafka.schema_registry_url))
    for b in dlq_ops.select(batches, [ident]):
        console.print_json(json.dumps(b.detail(), default=str))


@dlq_app.command("redrive")
def dlq_redrive(
    ident: Annotated[
        list[str] | None, typer.Argument(help="moe_request_ids or partition:offset positions")
    ] = None,
    stream: Annotated[str | None, typer.Option(help="only this stream's batches")] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="redrive every dead batch (of --stream if given)")
    ] = False,
) -> None:
    """Send dead batches again (same moe_request_id) through the running sink's retry path."""
    _, kafka, serde, view = _context()
    with Progress(
        TextColumn("redrive"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bars:
        task = bars.add_task("redrive", total=None)

        def advanced(total: int) -> None:
            bars.update(task, total=total, advance=1)

        done = ops.redrive(kafka, serde, view, ident, stream, all_, on_batch=advanced)
    for b in done:
        console.print(f"redriven {b.position} {b.record['stream_id']} {b.record['moe_request_id']}")
    console.print(f"{len(done)} batches redriven")
