"""Python's cyclic garbage collector run between the worker's batches instead of inside them.

The worker keeps large caches (decoded state values, attribute JSON, routes: some hundred thousand
objects). With the collector on its own thresholds, the allocations of a batch start a full collection
every few seconds, each walking every cached object: py-spy put ≈ 13 % of the worker's time at the
allocation sites that set them off. The worker allocates few reference cycles (freed memory is almost
all reclaimed by reference counting), so the collector is switched off while a batch is applied and run
between batches: the young generations every ``young_every_s``, a full collection every
``full_every_s``. Memory held by cycles is then bounded by what one interval makes.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from types import TracebackType


class Collector:
    """``with Collector(): ...`` switches automatic collection off (and back on after);
    :meth:`between_batches` runs what is due."""

    def __init__(
        self,
        young_every_s: float = 1.0,
        full_every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.young_every_s = young_every_s
        self.full_every_s = full_every_s
        self.clock = clock
        self._young = self._full = clock()
        self._was_enabled = True
        self.collections = [0, 0]  # young, full

    def __enter__(self) -> Collector:
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._young = self._full = self.clock()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._was_enabled:
            gc.enable()

    def between_batches(self) -> None:
        now = self.clock()
        if now - self._full >= self.full_every_s:
            gc.collect()
            self._full = self._young = now
            self.collections[1] += 1
        elif now - self._young >= self.young_every_s:
            gc.collect(1)
            self._young = now
            self.collections[0] += 1
