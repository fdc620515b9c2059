"""Progress of one file while it is imported: the rows counters, a ``PROCESSING`` run record with the counts
so far (at most every ``every_s``, so ``inflow imports run --follow`` and run history show rows as they
grow, from whichever poller imports the file), and the caller's own progress function."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from inflow.producers.s3_import import metrics
from inflow.producers.s3_import.exceptions import S3ImportError
from inflow.producers.s3_import.importer import ProgressFn
from inflow.producers.s3_import.runs import RunRecord, RunStore

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 1.0


class FileProgress:
    """Called by the importer at its check points (every 2,000 rows) and at the end of the file."""

    def __init__(
        self,
        run: RunRecord,
        workspace: str,
        topic: str,
        runs: RunStore,
        shown: ProgressFn | None = None,
        beat: Callable[[], None] = lambda: None,
        every_s: float = PROGRESS_EVERY_S,
    ) -> None:
        self.run, self.runs, self.shown, self.beat, self.every_s = run, runs, shown, beat, every_s
        self._rows = {
            state: metrics.ROWS.labels(workspace, run.import_name, topic, state)
            for state in ("added", "failed", "skipped")
        }
        self._counted = {"added": 0, "failed": 0, "skipped": 0}
        self._written_at = time.monotonic()

    def __call__(self, rows: int, nbytes: int) -> None:
        self.count()
        self.beat()
        if self.shown is not None:
            self.shown(rows, nbytes)
        now = time.monotonic()
        if now - self._written_at >= self.every_s:
            self._written_at = now
            self._write()

    def count(self) -> None:
        """Add the rows counted since the last call to the counters."""
        run = self.run
        for state, total in (
            ("added", run.rows_added),
            ("failed", run.rows_failed),
            ("skipped", run.rows_skipped),
        ):
            if total > self._counted[state]:
                self._rows[state].inc(total - self._counted[state])
                self._counted[state] = total

    def _write(self) -> None:
        """Best effort: a progress record that cannot be written now is skipped, the import goes on."""
        try:
            self.runs.write(self.run)
        except S3ImportError as exc:
            log.debug("progress of %s not written: %s", self.run.file_name, exc)
