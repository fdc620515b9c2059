"""``inflow up``'s supervisor with real child processes: restart with backoff, give up on a crash loop."""

from __future__ import annotations

import io
import sys
import threading
import time
from pathlib import Path

from inflow.supervisor import Supervisor


def _wait(condition, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def test_a_crashed_component_is_restarted_and_the_others_keep_running(tmp_path: Path) -> None:
    marker = tmp_path / "starts"
    crash_once = (
        "import pathlib, sys, time\n"
        f"p = pathlib.Path({str(marker)!r})\n"
        "n = int(p.read_text()) + 1 if p.exists() else 1\n"
        "p.write_text(str(n))\n"
        "print('start', n, flush=True)\n"
        "if n == 1:\n    sys.exit(3)\n"
        "time.sleep(600)\n"
    )
    out = io.StringIO()
    sup = Supervisor(out, backoff_s=0.1, stable_s=60, max_quick_failures=5)
    sup.spawn("flaky", [sys.executable, "-c", crash_once])
    sup.spawn("steady", [sys.executable, "-c", "import time; time.sleep(600)"])
    steady_pid = sup.children[1].proc.pid
    codes: list[int] = []
    waiter = threading.Thread(target=lambda: codes.append(sup.wait()))
    waiter.start()
    try:
        assert _wait(lambda: marker.exists() and marker.read_text() == "2")
        assert _wait(lambda: "restarted flaky" in out.getvalue())
        assert "flaky exited with code 3; restarting it in 0.1s" in out.getvalue()
        assert sup.children[1].proc.pid == steady_pid and sup.children[1].proc.poll() is None
    finally:
        sup.stop()
        waiter.join(10)
        sup.stop_all(10)
    assert codes == [0]
    assert all(child.proc.poll() is not None for child in sup.children)


def test_a_component_that_cannot_start_stops_everything_after_repeated_failures() -> None:
    out = io.StringIO()
    sup = Supervisor(out, backoff_s=0.05, stable_s=60, max_quick_failures=3)
    sup.spawn("broken", [sys.executable, "-c", "import sys; sys.exit(7)"])
    sup.spawn("steady", [sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        code = sup.wait()
    finally:
        sup.stop_all(10)
    assert code == 7
    assert "broken exited with code 7 3 times in a row within 60s of starting; stopping everything" in (
        out.getvalue()
    )
    assert out.getvalue().count("restarted broken") == 2
    assert all(child.proc.poll() is not None for child in sup.children)
