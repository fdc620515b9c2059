"""``inflow up``: run local Kafka and S3 plus every component in the foreground, logs prefixed by name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, TextIO


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[str]


def _pump(name: str, stream: IO[str], out: TextIO, lock: threading.Lock) -> None:
    width = 8
    for line in stream:
        with lock:
            out.write(f"{name:<{width}}| {line}")
            out.flush()


class Supervisor:
    """Starts component processes, prefixes their output, stops them all on Ctrl-C or when one dies."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.children: list[Child] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()

    def log(self, name: str, message: str) -> None:
        with self.lock:
            self.out.write(f"{name:<8}| {message}\n")
            self.out.flush()

    def spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=True,
        )
        assert proc.stdout is not None
        threading.Thread(target=_pump, args=(name, proc.stdout, self.out, self.lock), daemon=True).start()
        self.children.append(Child(name, proc))
        self.log("up", f"started {name} (pid {proc.pid})")

    def wait(self) -> int:
        """Block until Ctrl-C/SIGTERM or a child exits; return a non-zero code if a child failed."""
        previous = signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        code = 0
        try:
            while not self._stop.is_set():
                for child in self.children:
                    rc = child.proc.poll()
                    if rc is not None:
                        self.log("up", f"{child.name} exited with code {rc}; stopping everything")
                        code = rc or 1
                        self._stop.set()
                        break
                self._stop.wait(0.5)
        except KeyboardInterrupt:
            self.log("up", "interrupted; stopping")
        finally:
            signal.signal(signal.SIGTERM, previous)
        return code

    def stop_all(self, timeout: float = 20.0) -> None:
        """SIGTERM each child by pid (reverse start order), SIGKILL stragglers after ``timeout``."""
        for child in reversed(self.children):
            if child.proc.poll() is None:
                os.killpg(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in reversed(self.children):
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.proc.pid, signal.SIGKILL)
                child.proc.wait()
            self.log("up", f"stopped {child.name}")
