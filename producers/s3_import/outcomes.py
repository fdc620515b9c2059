"""Created vs updated: what the processors did with each written row, counted into the run's history.

The poller knows when its rows are in Kafka, not what they did: a users row creates a user or updates one,
and the processors may still reject or skip it. They say so per record, with the record's ``origin``
(``<import>/<file>/<row>``):

- ``processors.rejected`` (``RejectedRecord``, published today): ``outcome`` "rejected" -> a failed row,
  "skipped" -> a skipped row (``update_existing_only`` without a user).
- ``processors.outcomes`` (``RecordOutcome``, the interface the processors are asked to publish for every
  applied record that has an ``origin``): ``outcome`` "created" (a new user) -> added, "updated" -> updated,
  "added" (an event) -> added; "rejected" / "skipped" count as above.

A run whose rows are all written stays PROCESSING (``rows_written``, ``rows_applied`` show how far it is)
until every written row has an outcome; then it ends SUCCESSFUL / PARTIAL_SUCCESS / FAILED with the split.
Outcomes are kept per row number, first one wins, so an outcome read twice (a re-read after a restart, a
record re-applied after a processors crash) is counted once. A run that gets no new outcome for
``apply_timeout`` seconds ends with the rows never confirmed counted as added, and its message says so:
a run never stays PROCESSING for ever because the processors are away or an outcome was lost.

Each poller reads both topics whole (they carry file rows only, a small share of the traffic) from the
start of its oldest pending run (``offsets_for_times``), and counts the runs it tracks.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

from inflow.config.settings import KafkaSettings
from inflow.kafka.clients import new_admin, new_consumer
from inflow.kafka.consumer import good_messages
from inflow.producers.s3_import.records import TOPIC
from inflow.producers.s3_import.runs import RunRecord, outcome, outcome_message
from inflow.schemas.exceptions import SerdeError
from inflow.schemas.serde import AvroSerde

log = logging.getLogger(__name__)
ADDED, UPDATED, FAILED_ROW, SKIPPED = 1, 2, 3, 4
CODES = {"created": ADDED, "added": ADDED, "updated": UPDATED, "rejected": FAILED_ROW, "skipped": SKIPPED}
RECORDS = {"processors.outcomes": "RecordOutcome", "processors.rejected": "RejectedRecord"}
PROGRESS_EVERY_S = 5.0  # a tracked run's record is rewritten with its progress at most this often


@dataclass
class Pending:
    """A run whose written rows the processors are applying."""

    run: RunRecord
    codes: bytearray  # outcome code per row number (0: none yet)
    counts: Counter[int] = field(default_factory=Counter)
    last_outcome: float = field(default_factory=time.monotonic)
    written_at: float = 0.0
    reported_at: float = 0.0  # when its progress was last written to run history
    dirty: bool = False

    @property
    def applied(self) -> int:
        return sum(self.counts.values())


def origin_parts(origin: str) -> tuple[str, int] | None:
    """``<import>/<file>/<row>`` -> (``<import>/<file>``, row); None when it is not a file row's."""
    head, _, row = origin.rpartition("/")
    if not head or not row.isdigit():
        return None
    return head, int(row)


def finish(p: Pending, unconfirmed: int = 0, waited: float = 0.0) -> RunRecord:
    """The run's end state from its outcomes (rows rejected by the poller itself are already counted)."""
    run = p.run
    run.rows_added = p.counts[ADDED] + unconfirmed
    run.rows_updated = p.counts[UPDATED]
    run.rows_failed += p.counts[FAILED_ROW]
    run.rows_skipped += p.counts[SKIPPED]
    run.rows_applied = p.applied
    status = outcome(run.rows_added + run.rows_updated, run.rows_failed)
    message = outcome_message(status, run.unmapped_columns)
    if unconfirmed:
        note = (
            f"{unconfirmed} written rows were not confirmed by the processors within {waited:.0f} s "
            "and are counted as added"
        )
        message = f"{message}; {note}".lstrip("; ")
    run.finish(status, message)
    return run


class OutcomeTracker:
    """Counts the processors' outcomes into the runs this poller imported."""

    def __init__(self, kafka: KafkaSettings, serde: AvroSerde, apply_timeout: float) -> None:
        self.kafka = kafka
        self.serde = serde
        self.apply_timeout = apply_timeout
        self.topics = [kafka.topic(TOPIC[name]) for name in RECORDS]
        self.pending: dict[str, Pending] = {}  # by "<import>/<file>"
        self._consumer: Consumer | None = None
        self._since_ms: int | None = None
        self.missing: list[str] = []

    def available(self) -> bool:
        """True when the processors publish outcomes (``processors.outcomes`` exists). Without it, created
        and updated rows cannot be told apart and a run ends when its rows are written, as before."""
        topic = self.kafka.topic(TOPIC["processors.outcomes"])
        try:
            md = new_admin(self.kafka).list_topics(topic, timeout=10).topics.get(topic)
        except KafkaException:
            return False
        return md is not None and md.error is None and bool(md.partitions)

    # --- runs -------------------------------------------------------------------------------------
    def expect(self, run: RunRecord, rows: int) -> None:
        """Track ``run``: ``rows`` is the last row number of the file (outcomes name rows up to it)."""
        key = f"{run.import_name}/{run.file_name}"
        if key in self.pending and self.pending[key].run.run_id == run.run_id:
            return  # already tracked (found again in run history)
        since = int(run.started_at.timestamp() * 1000) - 1000
        self.pending[key] = Pending(run, bytearray(rows + 1), written_at=time.monotonic())
        if self._since_ms is None or since < self._since_ms:
            self._open(since)  # an earlier run than the position read from: read again (first one wins)

    def _open(self, since_ms: int) -> None:
        self.close()
        self._since_ms = since_ms
        consumer = new_consumer(self.kafka, f"{self.kafka.topic_prefix}.s3-import-outcomes")
        wanted, self.missing = [], []
        for topic in self.topics:
            md = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if md is None or md.error is not None or not md.partitions:
                self.missing.append(topic)
                continue
            wanted += [TopicPartition(topic, p, since_ms) for p in md.partitions]
        if self.missing:
            log.warning("outcome topics missing (runs end by timeout): %s", ", ".join(self.missing))
        positions = consumer.offsets_for_times(wanted, timeout=10) if wanted else []
        consumer.assign(
            [
                TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
                for tp in positions
            ]
        )
        self._consumer = consumer

    # --- reading ----------------------------------------------------------------------------------
    def pump(
        self, timeout: float = 0.0, budget_s: float = 1.0, batch: int = 5000
    ) -> tuple[list[RunRecord], list[RunRecord]]:
        """Apply the outcomes read for up to ``budget_s`` seconds: (runs that ended, runs whose progress
        should be written)."""
        deadline = time.monotonic() + budget_s
        while self._consumer is not None and self.pending:
            try:
                messages = self._consumer.consume(batch, timeout)
            except KafkaException as exc:
                log.warning("reading outcomes failed: %s", exc)
                break
            for msg in good_messages(messages, "import-outcomes"):
                self._apply(msg.topic() or "", msg.value())
            if len(messages) < batch or time.monotonic() >= deadline:
                break
        return self._ended(), self._progress()

    def _apply(self, topic: str, value: bytes | None) -> None:
        if value is None:
            return
        short = topic[len(self.kafka.topic_prefix) + 1 :]
        try:
            _, record = self.serde.decode(value, expected=RECORDS[short])
        except (SerdeError, KeyError) as exc:
            log.warning("unreadable outcome on %s: %s", topic, exc)
            return
        parts = origin_parts(record.get("origin") or "")
        code = CODES.get(str(record.get("outcome")))
        if parts is None or code is None:
            return
        p = self.pending.get(parts[0])
        row = parts[1]
        if p is None or row >= len(p.codes) or p.codes[row]:
            return
        p.codes[row] = code
        p.counts[code] += 1
        p.last_outcome = time.monotonic()
        p.dirty = True

    def _ended(self) -> list[RunRecord]:
        done, now = [], time.monotonic()
        for key, p in list(self.pending.items()):
            quiet = now - max(p.last_outcome, p.written_at)
            if p.applied >= p.run.rows_written:
                done.append(finish(p))
            elif quiet >= self.apply_timeout:
                done.append(finish(p, p.run.rows_written - p.applied, quiet))
            else:
                continue
            del self.pending[key]
        return done

    def _progress(self) -> list[RunRecord]:
        out = []
        for p in self.pending.values():
            if p.dirty and time.monotonic() - p.reported_at >= PROGRESS_EVERY_S:
                p.dirty, p.reported_at = False, time.monotonic()
                p.run.rows_applied = p.applied
                p.run.message = (
                    f"{p.run.rows_written} rows written; the processors applied {p.applied} of them"
                )
                out.append(p.run)
        return out

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()


def pending_from_history(runs: list[dict[str, Any]]) -> list[RunRecord]:
    """Runs of the history whose rows were written and whose outcomes were not all counted yet."""
    out = []
    for data in runs:
        run = RunRecord.from_avro(data)
        if run.status == "PROCESSING" and run.rows_written > 0 and run.completed_at is None:
            out.append(run)
    return out
