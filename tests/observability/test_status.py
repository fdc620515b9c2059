"""``inflow status`` against real processes: the poller and sink up, the gateway and worker down (their
ports answer nothing), lag per group from the broker; the exit code says whether all is well."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from inflow.config.settings import KafkaSettings
from inflow.local.process import free_port
from inflow.status import choose_ports, read_up_file, write_up_file
from tests.observability.offsets import commit_offset
from tests.support import wait_for


def inflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inflow.cli", *args],
        env=env | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture
def status_env(service_env: dict[str, str], catalogue_topics: KafkaSettings, unique: str) -> dict[str, str]:
    ports = {name: free_port() for name in ("GATEWAY", "POLLER_METRICS", "WORKER_METRICS", "SINK_METRICS")}
    return (
        service_env
        | {f"INFLOW_{name}_PORT": str(port) for name, port in ports.items()}
        | {
            "INFLOW_POLLER_GROUP_ID": f"status-{unique}",
            "INFLOW_SECRET_KEY": Fernet.generate_key().decode(),
        }
    )


@pytest.fixture
def poller_and_sink(status_env: dict[str, str], tmp_path: Path) -> Iterator[None]:
    procs = []
    for name in ("poller", "sink"):
        with (tmp_path / f"{name}.log").open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "inflow.cli", name], env=status_env, stdout=out, stderr=out
                )
            )
    yield
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        assert proc.wait(60) == 0


def test_status_shows_components_up_and_down_and_lag_per_group(
    status_env: dict[str, str],
    poller_and_sink: None,
    catalogue_topics: KafkaSettings,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    group = f"{catalogue_topics.topic_prefix}.streams.example"
    commit_offset(kafka_bootstrap, group, catalogue_topics.topic("events"), 0, 0)

    def report() -> dict | None:
        result = inflow(status_env, "status", "--json")
        data = json.loads(result.stdout)
        states = {c["name"]: c["state"] for c in data["components"]}
        if states["poller"] == "up" and states["sink"] == "up":
            assert result.returncode == 1  # the gateway and the worker are down
            return data
        return None

    logs = lambda: "".join(p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("*.log"))  # noqa: E731
    data = wait_for(report, 120, interval=1, what=f"poller and sink up; logs:\n{logs()}")
    states = {c["name"]: c["state"] for c in data["components"]}
    assert states == {"gateway": "down", "poller": "up", "worker": "down", "sink": "up"}
    assert data["healthy"] is False and data["kafka"] == "ok"
    lag = {g["group"]: g for g in data["lag"]}
    assert lag[group]["lag"] == 0 and lag[group]["partitions"][0]["committed"] == 0
    down = next(c for c in data["components"] if c["name"] == "worker")
    assert down["url"] == f"http://127.0.0.1:{status_env['INFLOW_WORKER_METRICS_PORT']}"

    table = inflow(status_env, "status")
    assert table.returncode == 1
    for word in ("components", "poller", "up", "down", "consumer lag (kafka: ok)", group):
        assert word in table.stdout, word


def test_status_with_nothing_running_and_no_broker_exits_non_zero(status_env: dict[str, str]) -> None:
    env = status_env | {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "KAFKA_SOCKET_TIMEOUT_MS": "2000",
    }
    result = inflow(env, "status", "--json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert {c["state"] for c in data["components"]} == {"down"}
    assert data["kafka"].startswith("unreachable") and data["lag"] == []


def test_up_file_is_read_only_while_its_process_lives(tmp_path: Path) -> None:
    urls = {"poller": "http://127.0.0.1:1"}
    write_up_file(tmp_path, urls)
    assert read_up_file(tmp_path) == urls
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (tmp_path / "up.json").write_text(json.dumps({"pid": int(dead.stdout), "components": urls}))
    assert read_up_file(tmp_path) is None
    assert read_up_file(tmp_path / "missing") is None


def test_choose_ports_keeps_free_ones_and_replaces_taken_ones() -> None:
    import socket

    free = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        taken = holder.getsockname()[1]
        chosen = choose_ports({"poller": free, "sink": taken})
    assert chosen["poller"] == free and chosen["sink"] != taken
