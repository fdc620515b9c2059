"""``inflow poller`` and ``inflow imports add|list|show|preview|run|archive``."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from inflow.config.secrets import SecretBox
from inflow.imports.aux import lookup_aux
from inflow.imports.history import file_item
from inflow.producers.s3_import.definition import ImportDefinition, parse_definition
from inflow.producers.s3_import.exceptions import DefinitionError
from inflow.producers.s3_import.follow import FileState, RunFollower
from inflow.producers.s3_import.naming import shown
from inflow.producers.s3_import.poller import Poller, RunSummary
from inflow.producers.s3_import.preview import preview
from inflow.producers.s3_import.runs import RunStore
from inflow.producers.s3_import.storage import S3File
from inflow.producers.s3_import.store import DefinitionStore, read_identifiers
from inflow.runtime import Runtime
from inflow.schemas.serde import AvroSerde

UP_PROCESSES: list[tuple[str, list[str]]] = [("poller", ["poller"])]


def config_sections(imports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The YAML ``imports`` entries validated by the import model (a bad entry raises naming it,
    ``imports[1]: ...``), as JSON-able dicts whose secrets (S3 secret key, PGP private key and passphrase)
    show as ``**********``."""
    definitions = [parse_definition(entry, f"imports[{i}]") for i, entry in enumerate(imports)]
    return [d.model_dump(mode="json") for d in definitions]


# ``inflow config check`` validates and masks the YAML file's ``imports`` section with this.
CONFIG_SECTIONS: dict[str, Any] = {"imports": config_sections}
imports_app = typer.Typer(
    help="S3 file imports: definitions, preview, runs and history.", no_args_is_help=True
)
console = Console()


def _store(rt: Runtime) -> DefinitionStore:
    serde = AvroSerde(rt.kafka.schema_registry_url)
    configured = {w.id: tuple(w.identifiers) for w in rt.config.workspaces}

    def identifiers_of(workspace_id: str) -> tuple[str, ...] | None:
        """control.workspaces first (as the workers), else the YAML file's workspace."""
        return read_identifiers(rt.kafka, serde, workspace_id) or configured.get(workspace_id)

    return DefinitionStore(rt.kafka, serde, SecretBox.from_settings(rt.paths), identifiers_of)


def read_definition_file(path: Path, manifest: Path | None = None) -> ImportDefinition:
    """A YAML or JSON file holding one definition; ``manifest`` is an uploaded mapping file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if manifest is not None:
            data["manifest"] = manifest.read_text(encoding="utf-8")
    except (OSError, yaml.YAMLError) as exc:
        raise DefinitionError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise DefinitionError(f"{path}: expected one import definition (a mapping)")
    from inflow.config.file import expand_env

    return parse_definition(expand_env(data), where=str(path))


def sync_yaml_imports(rt: Runtime, store: DefinitionStore) -> list[str]:
    """Write the YAML file's ``imports:`` into the control topic when new or changed (archived ones stay)."""
    changed = []
    for i, raw in enumerate(rt.config.imports):
        d = parse_definition(raw, where=f"imports[{i}]")
        current = store.definitions.get(d.name)
        if current is not None and (current.archived or _same(current, d)):
            continue
        store.put(d, replace=True)
        changed.append(d.name)
    return changed


def _same(a: ImportDefinition, b: ImportDefinition) -> bool:
    skip = {"created_at", "archived", "manifest", "triggered_at"}
    return a.model_dump(exclude=skip) == b.model_dump(exclude=skip)


def poller_command(
    metrics_port: Annotated[
        int | None,
        typer.Option(help="port of /metrics and /health (default INFLOW_POLLER_METRICS_PORT or 9101)"),
    ] = None,
) -> None:
    """Run the S3 import poller: schedules, discovery, ledger-coordinated imports (SIGTERM stops it)."""
    from inflow.observability.component import serve_component
    from inflow.observability.logs import configure_logging

    configure_logging("poller")
    rt = Runtime()
    poller = Poller(
        rt.kafka,
        SecretBox.from_settings(rt.paths),
        default_endpoint=rt.s3.endpoint_url,
        import_limits={w.id: w.import_limits for w in rt.config.workspaces},
        configured_identifiers={w.id: w.identifiers for w in rt.config.workspaces},
    )
    served = serve_component(
        "poller",
        port=metrics_port,
        checks={"loop": poller.heartbeat, "workspaces": lambda: _ready(poller.workspaces.ready)},
    )
    try:
        for name in sync_yaml_imports(rt, poller.store):
            logging.getLogger(__name__).info("import %s written from the config file", name)
        poller.run_forever()
    finally:
        served.stop()


def _ready(ready: bool) -> tuple[bool, str]:
    return ready, "read to its end" if ready else "still reading control.workspaces"


@imports_app.command("add")
def add(
    file: Annotated[Path, typer.Argument(help="YAML or JSON file with one import definition")],
    manifest: Annotated[Path | None, typer.Option(help="manifest (mapping) file to upload")] = None,
    replace: Annotated[bool, typer.Option(help="update an existing import of the same name")] = False,
) -> None:
    """Validate and add an import; secrets are encrypted at rest and never printed."""
    rt = Runtime()
    d = read_definition_file(file, manifest)
    stored = _store(rt).put(d, replace=replace)
    console.print(
        f"[green]added[/] import {stored.name} ({stored.type.value}, s3://{stored.bucket}/{stored.folder})"
    )


@imports_app.command("list")
def list_imports() -> None:
    """List imports with their type, folder, schedule and state."""
    store = _store(Runtime())
    table = Table("name", "workspace", "type", "folder", "file prefix", "schedule", "state")
    for d in sorted(store.definitions.values(), key=lambda x: x.name):
        every = d.schedule.every.value if d.schedule.every else "one-time"
        table.add_row(
            d.name,
            d.workspace_id,
            d.sub_type,
            f"s3://{d.bucket}/{d.folder}",
            d.prefix,
            every,
            "ARCHIVED" if d.archived else "SCHEDULED",
        )
    console.print(table)
    for name, err in store.errors.items():
        console.print(f"[yellow]unreadable definition {name}: {err}[/]")


@imports_app.command("show")
def show(
    name: str,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the import and its run history as JSON, for machines")
    ] = False,
) -> None:
    """Show one import (secrets masked) and its per-file run history."""
    rt = Runtime()
    d = _store(rt).get(name)
    runs = RunStore(rt.kafka, AvroSerde(rt.kafka.schema_registry_url)).history(name)
    items = [file_item(r) for r in runs]
    if as_json:
        typer.echo(json.dumps({"import": d.public_dict(), "files": items}, default=str))
        return
    console.print_json(json.dumps(d.public_dict(), default=str))
    table = Table(
        "file",
        "size",
        "scheduled",
        "completed",
        "total",
        "added",
        "updated",
        "failed",
        "skipped",
        "aux added",
        "aux failed",
        "status",
        "message",
    )
    for r, item in zip(runs, items, strict=True):
        table.add_row(
            shown(item["file_name"]),
            item["file_size"],
            str(item["scheduled_at"]),
            str(item["completed_at"] or "-"),
            str(item["total_rows"]),
            str(item["added_rows"]),
            str(item["updated_rows"]),
            str(item["failed_rows"]),
            str(item["skipped_rows"]),
            str(item["aux_data_added_count"]),
            str(item["aux_data_failed_count"]),
            r["status"],
            shown(item["status_msg"]),
        )
    console.print(table)


@imports_app.command("preview")
def preview_command(
    name: Annotated[str | None, typer.Argument(help="an existing import")] = None,
    file: Annotated[Path | None, typer.Option(help="preview a definition file before adding it")] = None,
) -> None:
    """Fetch the top 5 rows of the most recent matching file, with column names and sample values."""
    rt = Runtime()
    if file is not None:
        d = read_definition_file(file)
    elif name is not None:
        d = _store(rt).get(name)
    else:
        raise DefinitionError("give an import name or --file")
    result = preview(d, rt.s3.endpoint_url)
    console.print(f"file: {result.file_name}")
    table = Table("column", "sample value")
    for column in result.columns:
        table.add_row(column, _text(result.samples.get(column, "")))
    console.print(table)
    rows = Table(*result.columns)
    for row in result.rows:
        rows.add_row(*[_text(v) for v in row])
    console.print(rows)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@imports_app.command("run")
def run_command(
    name: str,
    follow: Annotated[
        bool,
        typer.Option(
            help="show each file's state and rows/s from its run records, also for files another poller "
            "imports, until every file of the run has ended"
        ),
    ] = False,
    timeout: Annotated[
        float | None, typer.Option(help="with --follow: stop following after this many seconds (exit 1)")
    ] = None,
) -> None:
    """Run an import now in the foreground, with a progress bar (rows, bytes, rows/s) per file."""
    rt = Runtime()
    poller = Poller(rt.kafka, SecretBox.from_settings(rt.paths), default_endpoint=rt.s3.endpoint_url)
    try:
        d = poller.store.get(name)
        poller.wait_for_partitions()
        if follow:
            summary, ended = _run_following(rt, poller, d, timeout)
        else:
            summary, ended = _run_with_bars(poller, d), True
    finally:
        poller.close()
    _print_summary(summary)
    if summary.error or not ended:
        raise typer.Exit(1)


def _run_with_bars(poller: Poller, d: ImportDefinition) -> RunSummary:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[rows]} rows"),
        TextColumn("{task.fields[rate]:.0f} rows/s"),
        TimeElapsedColumn(),
        console=console,
    ) as bars:

        def progress(file: S3File) -> Any:
            task = bars.add_task(file.name, total=file.size, rows=0, rate=0.0)
            started = time.monotonic()

            def update(rows: int, nbytes: int) -> None:
                rate = rows / max(time.monotonic() - started, 1e-3)
                bars.update(task, completed=nbytes, rows=rows, rate=rate)

            return update

        return poller.run_import(d, progress)


OWN_RECORDS_WAIT_S = 15.0


def _run_following(
    rt: Runtime, poller: Poller, d: ImportDefinition, timeout: float | None
) -> tuple[RunSummary, bool]:
    """Run the import on a thread while the run records of its files are read and shown; returns the
    summary and whether every file of the run ended (False when ``timeout`` passed first)."""
    since = datetime.now(UTC) - timedelta(seconds=2)  # the clocks of other pollers may be a little behind
    follower = RunFollower(rt.kafka, AvroSerde(rt.kafka.schema_registry_url), d.name, since).open()
    result: list[RunSummary] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            result.append(poller.run_import(d))
        except BaseException as exc:  # shown by the caller's thread
            failure.append(exc)

    worker = threading.Thread(target=work, name="import-run", daemon=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    shown_status: dict[str, str] = {}
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[status]:<15}"),
            TextColumn("{task.completed:.0f} rows"),
            TextColumn("{task.fields[rate]:.0f} rows/s"),
            TimeElapsedColumn(),
            console=console,
        ) as bars:
            tasks: dict[str, Any] = {}
            returned_at: float | None = None
            worker.start()
            while True:
                follower.pump(0.5)
                files = follower.files()
                for file_name, state in files.items():
                    if file_name not in tasks:
                        tasks[file_name] = bars.add_task(file_name, total=None, status="", rate=0.0)
                    total = state.rows_total if state.final else None
                    bars.update(
                        tasks[file_name],
                        completed=state.rows_total,
                        total=total,
                        status=state.status,
                        rate=state.rows_per_second(),
                    )
                    if shown_status.get(file_name) != state.status:
                        shown_status[file_name] = state.status
                        bars.console.print(
                            f"{file_name}: {state.status} {state.rows_total} rows "
                            f"({state.rows_per_second():.0f} rows/s) {state.message}".rstrip(),
                            markup=False,
                            highlight=False,
                        )
                if failure:
                    raise failure[0]
                if result:
                    returned_at = returned_at or time.monotonic()
                    # This process's own records are waited for briefly (their write may have failed).
                    if _run_ended(result[0], files, time.monotonic() - returned_at > OWN_RECORDS_WAIT_S):
                        return result[0], True
                if deadline is not None and time.monotonic() > deadline:
                    console.print(f"[yellow]stopped following after {timeout:g} s[/]")
                    poller.stop.set()  # a file being imported here checkpoints and hands over
                    worker.join(60)
                    return (result[0] if result else RunSummary(d.name)), False
    finally:
        follower.close()


def _run_ended(summary: RunSummary, files: dict[str, FileState], mine_waited: bool = False) -> bool:
    """This process's files have their last record shown, and every file another poller imports has
    ended (a file this process must retry later ends the run here; its record says RETRYING)."""
    mine = mine_waited or all(
        f.file_name in files and files[f.file_name].status == f.status for f in summary.files
    )
    others = all(name in files and files[name].final for name in summary.not_owned)
    return mine and others


def _print_summary(summary: RunSummary) -> None:
    if summary.error:
        console.print(f"[red]FAILED[/]: {summary.error}")
    for run in summary.files:
        console.print(
            f"{run.file_name}: {run.status} rows {run.rows_total} added {run.rows_added} "
            f"failed {run.rows_failed} skipped {run.rows_skipped} {run.message}"
        )
    for file, reason in summary.skipped.items():
        console.print(f"{file}: skipped, {reason}")
    for file in summary.not_owned:
        console.print(f"{file}: handled by another poller (its ledger partition is owned elsewhere)")
    if not (summary.files or summary.skipped or summary.not_owned or summary.error):
        console.print("no matching files")


@imports_app.command("archive")
def archive(name: str) -> None:
    """Archive an import: no future runs (a file being imported finishes)."""
    _store(Runtime()).archive(name)
    console.print(f"archived import {name}")


aux_app = typer.Typer(help="Auxiliary data imported from files, by key.", no_args_is_help=True)


@aux_app.command("get")
def aux_get(workspace_id: str, key: str) -> None:
    """Print the latest auxiliary data row of KEY in WORKSPACE_ID as JSON (exit 1 when there is none)."""
    rt = Runtime()
    item = lookup_aux(rt.kafka, AvroSerde(rt.kafka.schema_registry_url), workspace_id, key)
    if item is None:
        console.print(f"[red]no auxiliary data with key {key!r} in workspace {workspace_id}[/]")
        raise typer.Exit(1)
    typer.echo(json.dumps(item))


def register(app: typer.Typer) -> None:
    """Add ``inflow poller``, ``inflow imports ...`` and ``inflow aux ...`` to the main CLI."""
    app.command("poller")(poller_command)
    app.add_typer(imports_app, name="imports")
    app.add_typer(aux_app, name="aux")
