"""The ``inflow`` command line: local services, topics, configuration and every component."""

from __future__ import annotations

import importlib
import json
import signal
import sys
import time
from types import ModuleType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from inflow.config.secrets import new_key
from inflow.config.topics import create_topics, load_catalogue
from inflow.errors import InflowError
from inflow.kafka.clients import new_admin
from inflow.runtime import Runtime
from inflow.status import (
    PORT_ENV,
    UP_FILE,
    choose_ports,
    collect,
    configured_ports,
    read_up_file,
    urls_for,
    write_up_file,
)
from inflow.supervisor import Supervisor

app = typer.Typer(
    help="Inflow: MoEngage-compatible customer-data ingestion and streaming on Apache Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
kafka_app = typer.Typer(help="The local single-node Apache Kafka broker (KRaft).", no_args_is_help=True)
s3_app = typer.Typer(help="The local S3 server (SeaweedFS).", no_args_is_help=True)
topics_app = typer.Typer(help="The topic catalogue in config/topics.yaml.", no_args_is_help=True)
config_app = typer.Typer(help="The YAML configuration file.", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
app.add_typer(s3_app, name="s3")
app.add_typer(topics_app, name="topics")
app.add_typer(config_app, name="config")
console = Console()

# Component packages that add their commands (and their `inflow up` process) when present.
COMPONENT_CLIS = (
    "inflow.producers.bulk_api.cli",
    "inflow.producers.s3_import.cli",
    "inflow.processors.cli",
    "inflow.sinks.streams.cli",
    "inflow.console.cli",
)


def _print_json(data: object) -> None:
    console.print_json(json.dumps(data, default=str))


@kafka_app.command("start")
def kafka_start() -> None:
    """Fetch the broker jars (cached), format storage once, start the broker and wait until it answers."""
    rt = Runtime()
    if not rt.uses_local_kafka:
        console.print(f"KAFKA_BOOTSTRAP_SERVERS is set ({rt.kafka.bootstrap_servers}); nothing to start")
        return
    started = time.monotonic()
    servers = rt.local_kafka().start()
    console.print(f"Kafka answering on {servers} after {time.monotonic() - started:.1f}s")


@kafka_app.command("stop")
def kafka_stop() -> None:
    """Stop the local broker by its process id."""
    stopped = Runtime().local_kafka().stop()
    console.print("Kafka stopped" if stopped else "Kafka was not running")


@kafka_app.command("status")
def kafka_status() -> None:
    """Show whether the local broker runs and answers."""
    _print_json(Runtime().local_kafka().status())


@s3_app.command("start")
def s3_start() -> None:
    """Start the local SeaweedFS S3 gateway with the configured access key and secret."""
    rt = Runtime()
    if not rt.uses_local_s3:
        console.print(f"S3_ENDPOINT_URL is set ({rt.s3.endpoint_url}); nothing to start")
        return
    console.print(f"S3 answering on {rt.local_s3().start()}")


@s3_app.command("stop")
def s3_stop() -> None:
    """Stop the local S3 server by its process id."""
    console.print("S3 stopped" if Runtime().local_s3().stop() else "S3 was not running")


@s3_app.command("status")
def s3_status() -> None:
    """Show whether the local S3 server runs."""
    _print_json(Runtime().local_s3().status())


@topics_app.command("create")
def topics_create(
    replication: Annotated[int | None, typer.Option(help="override every topic's replication factor")] = None,
) -> None:
    """Create every catalogue topic that is missing; report topics with fewer partitions than declared."""
    rt = Runtime()
    admin = new_admin(rt.kafka)
    report = create_topics(
        admin,
        load_catalogue(rt.kafka.topic_prefix),
        replication or rt.kafka.replication_factor,
        min_insync_replicas=rt.kafka.min_insync_replicas,
    )
    for name in report.created:
        console.print(f"created  {name}")
    for name in report.existing:
        console.print(f"exists   {name}")
    for name, (have, want) in report.under_partitioned.items():
        console.print(f"[yellow]WARNING[/] {name} has {have} partitions, the catalogue declares {want}")


@topics_app.command("list")
def topics_list() -> None:
    """List the catalogue with each topic's state on the cluster."""
    rt = Runtime()
    metadata = new_admin(rt.kafka).list_topics(timeout=10)
    table = Table("topic", "key", "value", "partitions", "policy", "retention ms", "on cluster")
    for spec in load_catalogue(rt.kafka.topic_prefix):
        found = metadata.topics.get(spec.name)
        state = f"{len(found.partitions)} partitions" if found and not found.error else "missing"
        e = spec.entry
        table.add_row(
            spec.name, e.key, e.value, str(e.partitions), e.cleanup_policy, str(e.retention_ms or "-"), state
        )
    console.print(table)


@topics_app.command("grow")
def topics_grow(
    name: Annotated[
        str, typer.Argument(help="the topic as `inflow topics list` shows it (or its short name)")
    ],
    partitions: Annotated[int, typer.Argument(help="the new partition count", min=2)],
    wait: Annotated[
        float, typer.Option(help="seconds to wait for the workers to move identity state (0: do not wait)")
    ] = 600.0,
) -> None:
    """Grow a topic while the pipeline runs; ingest.records keeps every user's identity state (the workers
    move it to the new layout, shown as progress). Topics where growing is not safe are refused."""
    from rich.progress import Progress

    from inflow.processors.topic_growth import GrowthRefused, grow

    rt = Runtime()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("partitions with their state in the new layout", total=partitions)

        def shown(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            result = grow(rt.kafka, name, partitions, wait_s=wait, progress=shown)
        except GrowthRefused as exc:
            console.print(f"[red]refused[/]: {exc}")
            raise typer.Exit(2) from exc
    console.print(f"grew {result.topic} from {result.before} to {result.after} partitions")


@config_app.command("check")
def config_check() -> None:
    """Validate the YAML file (INFLOW_CONFIG, else the embedded defaults); secrets are shown masked."""
    cfg = Runtime().config
    shown = cfg.model_dump(mode="json")  # workspaces are typed: SecretStr dumps as '**********'
    # Imports and streams are validated by the component that owns their model, which also masks their
    # secrets (keys, passphrases, passwords, header values, URL query values). A section whose component
    # is not installed is not shown at all rather than shown in clear.
    validators: dict[str, Any] = {}
    for module in component_modules():
        validators |= getattr(module, "CONFIG_SECTIONS", {})
    for section in ("imports", "streams"):
        entries = getattr(cfg, section)
        check = validators.get(section)
        shown[section] = check(entries) if check is not None else f"{len(entries)} entries (not validated)"
    console.print(shown)
    console.print(
        f"[green]OK[/]: {len(cfg.workspaces)} workspaces, {len(cfg.imports)} imports, "
        f"{len(cfg.streams)} streams"
    )


@config_app.command("new-secret-key")
def config_new_secret_key() -> None:
    """Print a fresh INFLOW_SECRET_KEY (a Fernet key); give every Inflow process the same one."""
    print(new_key())


def component_modules() -> list[ModuleType]:
    """Import each component CLI module that exists."""
    found = []
    for name in COMPONENT_CLIS:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return found


@app.command("up")
def up(
    components: Annotated[bool, typer.Option(help="also start every Inflow component")] = True,
    demo: Annotated[
        bool,
        typer.Option(
            help="also start a local stream receiver, and send it data: a workspace, a stream, a Bulk "
            "request and a PGP-encrypted file in the S3 folder (see inflow/demo.py)"
        ),
    ] = False,
) -> None:
    """Start local Kafka and S3 and every Inflow component in the foreground; Ctrl-C stops them all."""
    # Ctrl-C stops everything even when SIGINT came ignored from the parent (a shell's background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    rt = Runtime()
    sup = Supervisor()
    receiver = None
    # Stop at the end only what this command started; a broker that was already running stays up.
    local_kafka = rt.local_kafka() if rt.uses_local_kafka and rt.local_kafka().process.pid() is None else None
    local_s3 = rt.local_s3() if rt.uses_local_s3 and rt.local_s3().process.pid() is None else None
    code = 0
    try:
        if local_kafka:
            sup.log(
                "kafka",
                f"starting local broker on {local_kafka.start()} (log {local_kafka.process.log_file})",
            )
        if local_s3:
            sup.log("s3", f"starting local S3 on {local_s3.start()} (log {local_s3.process.log_file})")
        report = create_topics(
            new_admin(rt.kafka),
            load_catalogue(rt.kafka.topic_prefix),
            rt.kafka.replication_factor,
            min_insync_replicas=rt.kafka.min_insync_replicas,
        )
        sup.log("topics", f"{len(report.created)} created, {len(report.existing)} existing")
        if components:
            # Default ports, or free ones when taken (another Inflow on this machine); `inflow status` reads
            # the chosen ones from $INFLOW_HOME/up.json.
            ports = choose_ports(configured_ports())
            for module in component_modules():
                for name, argv in getattr(module, "UP_PROCESSES", []):
                    env = {PORT_ENV[name]: str(ports[name])} if name in PORT_ENV else None
                    sup.spawn(name, [sys.executable, "-m", "inflow.cli", *argv], env)
            urls = urls_for(ports)
            write_up_file(rt.paths.home, urls)
            for name, url in urls.items():
                sup.log("up", f"{name:<8} health {url}/health  metrics {url}/metrics")
            for module in component_modules():
                for line in getattr(module, "up_announcements", list)():
                    sup.log("up", line)
        if demo and components:
            from inflow.demo import Receiver, start_demo
            from inflow.producers.bulk_api.settings import GatewaySettings

            receiver = Receiver().start()
            sup.log("demo", f"receiver on {receiver.url}; its count: {receiver.count_url}")
            gateway_url = f"http://127.0.0.1:{GatewaySettings().port}"
            start_demo(rt, receiver, gateway_url, lambda message: sup.log("demo", message))
        sup.log("up", "all components running; press Ctrl-C to stop")
        code = sup.wait()
    except KeyboardInterrupt:
        sup.log("up", "interrupted; stopping")
    finally:
        sup.stop_all()
        (rt.paths.home / UP_FILE).unlink(missing_ok=True)
        if receiver is not None:
            receiver.stop()
        if local_s3:
            local_s3.stop()
            sup.log("s3", "stopped")
        if local_kafka:
            local_kafka.stop()
            sup.log("kafka", "stopped")
    raise typer.Exit(code)


@app.command("status")
def status(
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Every component's health (its /health) and every consumer group's lag; exits 1 when any component
    is down or failing, or the broker cannot be read."""
    rt = Runtime()
    urls = read_up_file(rt.paths.home) or urls_for(configured_ports())
    report = collect(urls, rt.kafka)
    if as_json:
        print(json.dumps(report.as_json(), default=str))
        raise typer.Exit(0 if report.healthy else 1)
    colours = {"up": "green", "failing": "yellow", "down": "red"}
    table = Table("component", "state", "health", "detail", title="components")
    for c in report.components:
        table.add_row(c.name, f"[{colours[c.state]}]{c.state}[/]", f"{c.url}/health", c.detail)
    console.print(table)
    lag = Table("consumer group", "partitions", "lag", title=f"consumer lag (kafka: {report.kafka})")
    for g in report.lag:
        lag.add_row(g.group, str(len(g.partitions)), str(g.lag))
    console.print(lag)
    raise typer.Exit(0 if report.healthy else 1)


def main() -> None:
    for module in component_modules():
        register = getattr(module, "register", None)
        if register is not None:
            register(app)
    try:
        app()
    except InflowError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
