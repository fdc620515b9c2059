"""The pipeline as real ``inflow`` processes, shared by the fault bench and the end-to-end bench.

What both need: a private broker (or a given one), a YAML file with one workspace and one stream, the
environment every ``inflow <command>`` subprocess gets, components started in their own session and ended
by their process id only, deadline waits, and CPU seconds of a process tree read from ``/proc``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml
from cryptography.fernet import Fernet

from inflow.config.settings import LocalKafkaSettings
from inflow.local.kafka import LocalKafka
from inflow.local.process import free_port

NO_LIMIT = 1_000_000_000  # per-minute rate limits that never bite in a bench


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """The first truthy value of ``predicate``; raises TimeoutError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def cache_dir() -> Path:
    return Path(os.environ.get("INFLOW_CACHE_DIR", Path.home() / ".cache" / "inflow"))


def start_local_kafka(home: Path) -> LocalKafka:
    """A private single-node broker on free loopback ports (stop it with ``.stop()``)."""
    kafka = LocalKafka(home, cache_dir(), LocalKafkaSettings(port=free_port(), controller_port=free_port()))
    kafka.start()
    return kafka


# --- CPU time from /proc ---------------------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux ``/proc/<pid>/task/*/children``); gone processes are skipped."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def cpu_seconds(pid: int, tree: bool = True) -> float:
    """User + system CPU seconds of ``pid`` (and its live descendants); 0.0 for a process that is gone."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for p in process_tree(pid) if tree else [pid]:
        try:
            f = _stat_fields(p)
        except OSError:
            continue
        total += (int(f[11]) + int(f[12])) / tick
    return total


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name of a process (``/proc/<pid>/task``): the main thread against
    librdkafka's (``rdk:*``) and the others, numbered names merged."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = "main" if task.name == str(pid) else re.sub(r"[\d/]+$", "", name) or name
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def machine_cpu() -> dict[str, float]:
    """Seconds of CPU the whole machine spent since boot (``/proc/stat``): busy (user, nice, system, irq,
    softirq), idle (with iowait) and steal (taken by the hypervisor for other guests: not ours to use)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return {
        "busy": (user + nice + system + irq + softirq) / tick,
        "idle": (idle + iowait) / tick,
        "steal": steal / tick,
    }


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- configuration and environment -----------------------------------------------------------------------
@dataclass
class StreamSpec:
    id: str
    url: str
    app_name: str = "Bench"
    batch_size: int | None = None  # None: the product's default
    linger_s: float | None = None
    retry_delays_s: Sequence[float] | None = None

    def definition(self, workspace: str) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "url": self.url, "workspace_id": workspace}
        d["app_name"] = self.app_name
        if self.batch_size is not None:
            d["batch_size"] = self.batch_size
        if self.linger_s is not None:
            d["linger_s"] = self.linger_s
        if self.retry_delays_s is not None:
            d["retry_delays_s"] = list(self.retry_delays_s)
        return d


def write_config(path: Path, workspace: str, api_key: str, streams: Sequence[StreamSpec]) -> Path:
    """The ``INFLOW_CONFIG`` YAML: one workspace with limits too high to matter, and its streams."""
    path.write_text(
        yaml.safe_dump(
            {
                "workspaces": [
                    {
                        "id": workspace,
                        "api_key": api_key,
                        "rate_limits": {"users_per_minute": NO_LIMIT, "events_per_minute": NO_LIMIT},
                    }
                ],
                "imports": [],
                "streams": [s.definition(workspace) for s in streams],
            }
        )
    )
    return path


def inflow_env(bootstrap: str, prefix: str, home: Path, config: Path, **extra: str) -> dict[str, str]:
    """The environment of every ``inflow`` subprocess: this one's, minus any KAFKA_/S3_/INFLOW_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "S3_", "INFLOW_"))}
    return env | {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC_PREFIX": prefix,
        "INFLOW_HOME": str(home),
        "INFLOW_CONFIG": str(config),
        "INFLOW_SECRET_KEY": Fernet.generate_key().decode(),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


# --- components ------------------------------------------------------------------------------------------
@dataclass
class Component:
    """One ``inflow <command>`` process; started in its own session, ended by its pid only."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    _terminated: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"\n=== start {self.starts + 1} at {time.strftime('%H:%M:%S')} ===\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "inflow.cli", *self.argv],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL by pid (no clean-up runs) and reap it."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.exit_codes.append(self.proc.wait(60))

    def terminate(self) -> None:
        """SIGTERM by pid (a clean stop); ``stop`` then waits for the exit."""
        if self.proc is not None and self.proc.poll() is None and self._terminated is not self.proc:
            self._terminated = self.proc  # once: a second SIGTERM means "stop now" to some components
            os.kill(self.proc.pid, signal.SIGTERM)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM by pid; SIGKILL after ``timeout``. Returns the exit code (None if it never ran)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        code = self.proc.returncode
        self.exit_codes.append(code)
        return code

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


def stop_all(components: Sequence[Component], timeout: float = 60.0) -> dict[str, int | None]:
    """SIGTERM every component at once (a clean stop exits 0), then wait; returns the exit codes."""
    for c in components:
        c.terminate()
    return {c.name: c.stop(timeout) for c in components}


def gateway_healthy(gateway: Component, url: str) -> bool:
    """True once ``url``/health answers 200; raises with the log's tail if the gateway exited."""
    if not gateway.alive:
        raise RuntimeError(f"{gateway.name} exited:\n{gateway.log_text()[-3000:]}")
    try:
        return requests.get(url + "/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False
