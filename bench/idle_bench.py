"""Idle CPU of every process of ``inflow up``: the broker, the S3 server and each component, nothing to do.

    .venv/bin/python -m bench.idle_bench [--seconds 60] [--warmup 20] [--config FILE] [--write out.md]

Runs the real ``inflow up`` (its own ``INFLOW_HOME`` in a temporary folder, free ports for the broker, its
controller, the S3 server and the gateway), waits until every component is started and the gateway answers
``/health``, lets it settle for ``--warmup`` seconds, then reads each process's user + system CPU time from
``/proc/<pid>/stat`` at the start and the end of ``--seconds`` with no traffic at all. The broker's and the
S3 server's pids come from their pid files, the components' from ``inflow up``'s "started NAME (pid N)" lines;
the CPU of a process's threads is included, that of its children is not (none of them has any).

``--no-components`` measures the broker and the S3 server alone (what the components' clients cost them is
the difference). ``--config`` passes a YAML file (``INFLOW_CONFIG``), e.g. with an import whose schedule
makes the poller list its S3 folder. ``inflow up`` is stopped with SIGTERM by its pid at the end, which stops
everything it started.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from inflow.local.process import free_port, pid_alive

STARTED = re.compile(r"started (\w+) \(pid (\d+)\)")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pid_from(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise SystemExit(f"{what} not ready after {timeout:.0f}s")


def gateway_healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="idle time measured")
    parser.add_argument("--warmup", type=float, default=20.0, help="settling time after the start")
    parser.add_argument("--config", type=Path, help="INFLOW_CONFIG for the run")
    parser.add_argument("--write", type=Path, help="also write the table (Markdown) to this file")
    parser.add_argument(
        "--no-components",
        action="store_true",
        help="only the broker and the S3 server (inflow up --no-components)",
    )
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="inflow-idle-"))
    gateway_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "S3_", "INFLOW_"))}
    env |= {
        "INFLOW_HOME": str(home),
        "INFLOW_KAFKA_PORT": str(free_port()),
        "INFLOW_KAFKA_CONTROLLER_PORT": str(free_port()),
        "INFLOW_S3_PORT": str(free_port()),
        "INFLOW_GATEWAY_PORT": str(gateway_port),
        "PYTHONUNBUFFERED": "1",
    }
    if "INFLOW_CACHE_DIR" in os.environ:
        env["INFLOW_CACHE_DIR"] = os.environ["INFLOW_CACHE_DIR"]
    if args.config:
        env["INFLOW_CONFIG"] = str(args.config.resolve())
    up = subprocess.Popen(
        [sys.executable, "-m", "inflow.cli", "up", *(["--no-components"] if args.no_components else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    pids: dict[str, int] = {"up (supervisor)": up.pid}
    log: list[str] = []

    def read_output() -> None:
        assert up.stdout is not None
        for line in up.stdout:
            log.append(line)
            found = STARTED.search(line)
            if found:
                pids[found.group(1)] = int(found.group(2))

    threading.Thread(target=read_output, daemon=True).start()
    try:
        wait_for(lambda: "all components running" in "".join(log) or up.poll() is not None, 300, "inflow up")
        if up.poll() is not None:
            raise SystemExit("inflow up exited:\n" + "".join(log[-30:]))
        if not args.no_components:
            wait_for(lambda: gateway_healthy(gateway_port), 120, "the gateway")
        for name, pid_file in (("kafka", home / "kafka" / "kafka.pid"), ("s3", home / "s3" / "weed.pid")):
            pid = pid_from(pid_file)
            if pid is not None:
                pids[name] = pid
        time.sleep(args.warmup)
        before = {name: cpu_seconds(pid) for name, pid in pids.items() if pid_alive(pid)}
        started = time.monotonic()
        time.sleep(args.seconds)
        elapsed = time.monotonic() - started
        after = {name: cpu_seconds(pid) for name, pid in pids.items() if name in before and pid_alive(pid)}
        memory = {name: rss_mb(pids[name]) for name in after}
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        try:
            up.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()

    lines = [
        f"idle for {elapsed:.0f} s after a {args.warmup:.0f} s warm-up "
        f"({os.cpu_count()} cores; % is of one core)",
        "",
        "| process | CPU s | % of one core | RSS MB |",
        "|---|---:|---:|---:|",
    ]
    total = 0.0
    for name in sorted(after):
        used = after[name] - before[name]
        total += used
        lines.append(f"| {name} | {used:.2f} | {100 * used / elapsed:.1f} | {memory[name]:.0f} |")
    lines.append(f"| **all** | {total:.2f} | {100 * total / elapsed:.1f} | |")
    missing = sorted(set(pids) - set(after))
    if missing:
        lines.append(f"\nexited during the measurement: {', '.join(missing)}")
    text = "\n".join(lines)
    print(text)
    if args.write:
        args.write.write_text(text + "\n")


if __name__ == "__main__":
    main()
