"""Per-workspace rate limits (users, events, exports per window) that hold across gateway processes.

Mechanism (no extra server): windows are fixed and aligned to the epoch, so every process agrees on them.
Each gateway counts what it admits per workspace and window and publishes its running totals to the
compacted ``control.gateway-rates`` topic (key workspace + gateway id, last value wins). Every gateway
follows that topic and admits a request only if its own count plus the latest counts of all other
gateways plus the request stays within the limit. The limit is therefore global; the only slack is what
other gateways admitted during the follow latency (tens of milliseconds), which is the usual trade-off
of gossip counters and far smaller than a per-process split would waste.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from inflow.schemas.serde import AvroSerde

TOPIC = "control.gateway-rates"
RECORD = "GatewayRateCount"
Publish = Callable[[bytes, bytes], None]


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a request fits, and the figures for the ``x-ratelimit-*`` headers per dimension."""

    allowed: bool
    window_start: int
    reset_s: int
    limits: Mapping[str, int]
    used: Mapping[str, int]

    def remaining(self, dimension: str) -> int:
        return max(0, self.limits[dimension] - self.used.get(dimension, 0))

    def headers(self, primary: str | None = None) -> dict[str, str]:
        """``x-ratelimit-limit/remaining/reset`` for the tightest (or the named) dimension, plus each one."""
        dims = list(self.limits)
        if primary is None or primary not in self.limits:
            primary = min(dims, key=lambda d: self.remaining(d) / self.limits[d])
        out = {
            "x-ratelimit-limit": str(self.limits[primary]),
            "x-ratelimit-remaining": str(self.remaining(primary)),
            "x-ratelimit-reset": str(self.reset_s),
        }
        for dim in dims:
            out[f"x-ratelimit-limit-{dim}"] = str(self.limits[dim])
            out[f"x-ratelimit-remaining-{dim}"] = str(self.remaining(dim))
        return out


class RateLimiter:
    """Fixed-window counters; local admissions plus the published counts of the other gateways."""

    def __init__(
        self, gateway_id: str, window_s: int, serde: AvroSerde, publish: Publish | None = None
    ) -> None:
        self.gateway_id = gateway_id
        self.window_s = window_s
        self.serde = serde
        self.publish = publish
        self._encode = serde.encoder(RECORD)
        self._own: dict[str, tuple[int, dict[str, int]]] = {}
        self._others: dict[str, dict[str, tuple[int, dict[str, int]]]] = {}
        self._lock = threading.Lock()

    def window_of(self, now: float) -> tuple[int, int]:
        """Window start (epoch seconds) and whole seconds until it resets."""
        start = int(now // self.window_s) * self.window_s
        return start, max(1, math.ceil(start + self.window_s - now))

    def observe(self, key: bytes | None, value: bytes | None) -> None:
        """Apply a count published by any gateway (our own are ignored: we know them first-hand)."""
        if value is None:
            return
        _, record = self.serde.decode(value, expected=RECORD)
        if record["gateway_id"] == self.gateway_id:
            return
        start = int(record["window_start"].timestamp())
        with self._lock:
            by_gateway = self._others.setdefault(record["workspace_id"], {})
            previous = by_gateway.get(record["gateway_id"])
            if previous is None or previous[0] <= start:
                by_gateway[record["gateway_id"]] = (start, dict(record["counts"]))

    def _used(self, workspace_id: str, start: int) -> dict[str, int]:
        used: dict[str, int] = {}
        own = self._own.get(workspace_id)
        if own is not None and own[0] == start:
            used.update(own[1])
        for window, counts in self._others.get(workspace_id, {}).values():
            if window == start:
                for dim, n in counts.items():
                    used[dim] = used.get(dim, 0) + n
        return used

    def acquire(
        self, workspace_id: str, wanted: Mapping[str, int], limits: Mapping[str, int], now: float
    ) -> Decision:
        """Admit ``wanted`` units if every dimension stays within its limit; all or nothing."""
        start, reset = self.window_of(now)
        with self._lock:
            used = self._used(workspace_id, start)
            fits = all(used.get(d, 0) + n <= limits[d] for d, n in wanted.items() if n)
            if fits and any(wanted.values()):
                self._add(workspace_id, start, wanted, 1)
                used = {d: used.get(d, 0) + wanted.get(d, 0) for d in set(used) | set(wanted)}
        if fits and any(wanted.values()):
            self._publish(workspace_id, start)
        return Decision(fits, start, reset, limits, used)

    def refund(self, workspace_id: str, decision: Decision, wanted: Mapping[str, int]) -> None:
        """Give back units of a request the broker did not take (the client will retry it)."""
        with self._lock:
            self._add(workspace_id, decision.window_start, wanted, -1)
        self._publish(workspace_id, decision.window_start)

    def status(self, workspace_id: str, limits: Mapping[str, int], now: float) -> Decision:
        start, reset = self.window_of(now)
        with self._lock:
            return Decision(True, start, reset, limits, self._used(workspace_id, start))

    def _add(self, workspace_id: str, start: int, wanted: Mapping[str, int], sign: int) -> None:
        window, counts = self._own.get(workspace_id, (start, {}))
        if window != start:
            if window > start:  # a refund for a window that is already over
                return
            counts = {}
        for dim, n in wanted.items():
            counts[dim] = max(0, counts.get(dim, 0) + sign * n)
        self._own[workspace_id] = (start, counts)

    def _publish(self, workspace_id: str, start: int) -> None:
        if self.publish is None:
            return
        with self._lock:
            window, counts = self._own.get(workspace_id, (start, {}))
            record: dict[str, Any] = {
                "workspace_id": workspace_id,
                "gateway_id": self.gateway_id,
                "window_start": datetime.fromtimestamp(window, UTC),
                "counts": dict(counts),
                "updated_at": datetime.now(UTC),
            }
        self.publish(f"{workspace_id}|{self.gateway_id}".encode(), self._encode(record))
