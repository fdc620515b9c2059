"""``inflow kafka start|stop|status`` and ``inflow up`` as a user runs them; nothing is left behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from inflow.local.process import free_port, pid_alive
from tests.support import wait_for


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "S3_", "INFLOW_"))}
    return env | {
        "INFLOW_HOME": str(tmp_path / "home"),
        "INFLOW_KAFKA_PORT": str(free_port()),
        "INFLOW_KAFKA_CONTROLLER_PORT": str(free_port()),
        "INFLOW_S3_PORT": str(free_port()),
        "INFLOW_CONSOLE_PORT": str(free_port()),
        "KAFKA_TOPIC_PREFIX": "uptest",
        "COLUMNS": "200",
    }


def _get_json(url: str, token: str) -> dict[str, str] | None:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return dict(json.loads(response.read()))
    except OSError:
        return None


def _kill_leftovers(proc: subprocess.Popen[str], home: Path, lines: list[str]) -> None:
    """After a failed stop: end `inflow up`, the components it printed as started and the broker and S3
    server it started (by their pid files)."""
    proc.kill()
    proc.wait(30)
    for line in lines:
        if "started " in line and "(pid " in line:
            with contextlib.suppress(OSError, ValueError):
                os.killpg(int(line.split("(pid ")[1].split(")")[0].split(",")[0]), signal.SIGKILL)
    for pid_file in (home / "kafka" / "kafka.pid", home / "s3" / "weed.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)


def _inflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "inflow.cli", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except urllib.error.HTTPError:
        return True  # 503 while starting is an answer
    except OSError:
        return False


def test_kafka_start_status_stop_leaves_no_process(tmp_path):
    env = _env(tmp_path)
    started = _inflow(env, "kafka", "start")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "answering on" in started.stdout
    status = json.loads(_inflow(env, "kafka", "status").stdout)
    assert status["running"] and status["answering"] and status["jars_cached"]
    pid = status["pid"]
    again = _inflow(env, "kafka", "start")  # idempotent: the running broker is reused
    assert again.returncode == 0
    assert json.loads(_inflow(env, "kafka", "status").stdout)["pid"] == pid
    stopped = _inflow(env, "kafka", "stop")
    assert "Kafka stopped" in stopped.stdout
    assert not pid_alive(pid)
    assert json.loads(_inflow(env, "kafka", "status").stdout)["running"] is False
    assert "not running" in _inflow(env, "kafka", "stop").stdout


def test_up_starts_everything_and_ctrl_c_stops_everything(tmp_path):
    env = _env(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "inflow.cli", "up"],
        env=env,
        # As when started from a shell's background job (CI): SIGINT arrives ignored; Ctrl-C must still work.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # noqa: PLW1509
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_for(
            lambda: any("all components running" in line for line in lines) or proc.poll() is not None,
            timeout=240,
            what="inflow up to report readiness",
        )
        assert proc.poll() is None, "".join(lines)
        kafka_pid = int((tmp_path / "home" / "kafka" / "kafka.pid").read_text())
        s3_pid = int((tmp_path / "home" / "s3" / "weed.pid").read_text())
        child_pids = [
            int(line.split("pid ")[1].rstrip(")\n"))
            for line in lines
            if "started " in line and "(pid" in line
        ]
        assert any(line.startswith("topics") for line in lines)
        # Every component's health and metrics URL is printed, and recorded for `inflow status`.
        urls = json.loads((tmp_path / "home" / "up.json").read_text())["components"]
        assert set(urls) == {"gateway", "poller", "worker", "sink"}
        for name, url in urls.items():
            assert any(f"{name:<8} health {url}/health  metrics {url}/metrics" in line for line in lines)
        for name in ("poller", "sink"):  # they serve on the printed port
            health = urls[name] + "/health"
            wait_for(lambda h=health: _answers(h), 120, what=f"{name} {health}")
        console = f"http://127.0.0.1:{env['INFLOW_CONSOLE_PORT']}"
        assert any(f"web console and admin API on {console}" in line for line in lines), "".join(lines)
        # No admin token existed: the console made one and printed it once; it logs in to the admin API.
        token_line = wait_for(
            lambda: next((line for line in lines if "admin token 'bootstrap': " in line), None),
            timeout=120,
            what="the console's bootstrap admin token",
        )
        token = token_line.split("admin token 'bootstrap': ")[1].strip()
        whoami = wait_for(lambda: _get_json(f"{console}/api/whoami", token), 60, what="the console")
        assert whoami == {"name": "bootstrap", "role": "admin"}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(180)
        except subprocess.TimeoutExpired:
            _kill_leftovers(proc, tmp_path / "home", lines)
            pytest.fail("inflow up still running 180 s after Ctrl-C; last lines:\n" + "".join(lines[-80:]))
        reader.join(10)
    output = "".join(lines)
    assert proc.returncode == 0, output
    assert "kafka   | stopped" in output and "s3      | stopped" in output
    assert not (tmp_path / "home" / "up.json").exists()
    for pid in [kafka_pid, s3_pid, *child_pids]:
        assert not pid_alive(pid), f"pid {pid} still running after Ctrl-C\n{output}"
