"""Health of a component: named checks, each answering ok or not with a short detail.

A check is a function returning ``(ok, detail)``; a check that raises counts as failed with the error's
type (never its text, which may name hosts or users). :class:`Heartbeat` is the usual check of a loop:
healthy while the loop has beaten within ``max_age_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

Check = Callable[[], tuple[bool, str]]
log = logging.getLogger(__name__)


class Heartbeat:
    """A loop calls :meth:`beat` on every turn; the check fails when it has not for ``max_age_s``."""

    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self._last: float | None = None
        self._lock = threading.Lock()

    def beat(self) -> None:
        with self._lock:
            self._last = time.monotonic()

    def __call__(self) -> tuple[bool, str]:
        with self._lock:
            last = self._last
        if last is None:
            return False, "not started"
        age = time.monotonic() - last
        if age > self.max_age_s:
            return False, f"no progress for {age:.0f} s"
        return True, f"last turn {age:.1f} s ago"


class Health:
    """The checks of one component; :meth:`report` is the ``/health`` body."""

    def __init__(self, component: str) -> None:
        self.component = component
        self._checks: dict[str, Check] = {}
        self._lock = threading.Lock()

    def add(self, name: str, check: Check) -> None:
        with self._lock:
            self._checks[name] = check

    def remove(self, name: str) -> None:
        with self._lock:
            self._checks.pop(name, None)

    def report(self) -> dict[str, Any]:
        """``{"status": "ok"|"failing", "component", "checks": {name: {"ok", "detail"}}}``."""
        with self._lock:
            checks = dict(self._checks)
        results: dict[str, dict[str, Any]] = {}
        for name, check in checks.items():
            try:
                ok, detail = check()
            except Exception as exc:  # noqa: BLE001 - a broken check is a failed check, not a broken server
                log.warning("health check %s raised", name, exc_info=True)
                ok, detail = False, f"check failed: {type(exc).__name__}"
            results[name] = {"ok": bool(ok), "detail": detail}
        healthy = all(r["ok"] for r in results.values())
        return {"status": "ok" if healthy else "failing", "component": self.component, "checks": results}
