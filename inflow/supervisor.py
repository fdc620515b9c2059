"""``inflow up``: run local Kafka and S3 plus every component in the foreground, logs prefixed by name.

A component that exits is restarted with exponential backoff (1 s, 2 s, 4 s ... up to 30 s) and the log says
so; one failing component never takes the others down. Everything stops on Ctrl-C / SIGTERM, or when one
component fails ``max_quick_failures`` times in a row within ``stable_s`` of its start (it cannot start at
all, e.g. a bad setting), so a broken setup does not restart forever.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, TextIO


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[str]
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    quick_failures: int = 0
    restarts: int = 0
    restart_at: float | None = None  # when an exited child is due to start again


def _pump(name: str, stream: IO[str], out: TextIO, lock: threading.Lock) -> None:
    width = 8
    for line in stream:
        with lock:
            out.write(f"{name:<{width}}| {line}")
            out.flush()


class Supervisor:
    """Starts components, prefixes their output, restarts one that exits, stops them all on Ctrl-C."""

    def __init__(
        self,
        out: TextIO = sys.stdout,
        *,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        stable_s: float = 30.0,
        max_quick_failures: int = 5,
    ) -> None:
        self.out = out
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.stable_s = stable_s
        self.max_quick_failures = max_quick_failures
        self.children: list[Child] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()

    def log(self, name: str, message: str) -> None:
        with self.lock:
            self.out.write(f"{name:<8}| {message}\n")
            self.out.flush()

    def spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        child = Child(name, self._start(name, argv, env), list(argv), dict(env or {}))
        self.children.append(child)
        self.log("up", f"started {name} (pid {child.proc.pid})")

    def _start(self, name: str, argv: Sequence[str], env: dict[str, str] | None) -> subprocess.Popen[str]:
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
        return proc

    def wait(self) -> int:
        """Block until Ctrl-C/SIGTERM, restarting children that exit; return non-zero when a child kept
        failing right after its start and everything was stopped for it."""
        main = threading.current_thread() is threading.main_thread()  # signals reach the main thread only
        previous = signal.signal(signal.SIGTERM, lambda *_: self._stop.set()) if main else None
        # Ctrl-C even when SIGINT came ignored from the parent (a shell's background job starts with it
        # ignored, and Python then installs no handler of its own).
        previous_int = signal.signal(signal.SIGINT, signal.default_int_handler) if main else None
        code = 0
        try:
            while not self._stop.is_set():
                for child in self.children:
                    code = self._watch(child)
                    if code:
                        self._stop.set()
                        break
                self._stop.wait(0.2)
        except KeyboardInterrupt:
            self.log("up", "interrupted; stopping")
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)
                signal.signal(signal.SIGINT, previous_int)
        return code

    def stop(self) -> None:
        """Make :meth:`wait` return (what SIGTERM does)."""
        self._stop.set()

    def _watch(self, child: Child) -> int:
        """Restart ``child`` when it has exited and its backoff has passed; non-zero to stop everything."""
        now = time.monotonic()
        if child.restart_at is not None:
            if now >= child.restart_at:
                child.restart_at = None
                child.restarts += 1
                child.started = now
                child.proc = self._start(child.name, child.argv, child.env)
                self.log("up", f"restarted {child.name} (pid {child.proc.pid}, restart {child.restarts})")
            return 0
        rc = child.proc.poll()
        if rc is None:
            if child.quick_failures and now - child.started >= self.stable_s:
                child.quick_failures = 0  # it has run long enough: the next failure starts a new count
            return 0
        quick = now - child.started < self.stable_s
        child.quick_failures = child.quick_failures + 1 if quick else 1
        if child.quick_failures >= self.max_quick_failures:
            self.log(
                "up",
                f"{child.name} exited with code {rc} {child.quick_failures} times in a row within "
                f"{self.stable_s:g}s of starting; stopping everything",
            )
            return rc or 1
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (child.quick_failures - 1))
        child.restart_at = now + delay
        self.log("up", f"{child.name} exited with code {rc}; restarting it in {delay:g}s")
        return 0

    def stop_all(self, timeout: float = 20.0) -> None:
        """SIGTERM each child by pid (reverse start order), SIGKILL stragglers after ``timeout``."""
        for child in reversed(self.children):
            child.restart_at = None
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
