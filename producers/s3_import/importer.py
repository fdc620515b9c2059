"""Import one file: stream it from S3 (through GnuPG when encrypted), read it with the reader of its format,
map each row, produce the good rows as Avro records, count and report the bad ones, and checkpoint progress
in the ledger. A row whose record is over the topic's size limit is refused by the producer before it is
queued (:class:`~inflow.kafka.errors.RecordTooLarge`): it is a failed row like any other, with the reason
in the error report, and the rest of the file goes on.

Memory is bounded whatever the file size: rows flow from the HTTP socket through the CSV reader into the
producer's bounded queue; the error report is spooled to a temporary file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from inflow.config.settings import KafkaSettings
from inflow.imports.aux import aux_partition
from inflow.kafka.clients import new_admin, topic_partitions
from inflow.kafka.errors import KafkaFault, Kind, RecordTooLarge
from inflow.kafka.producer import KafkaProducer
from inflow.producers.s3_import.avro_template import template_encoder
from inflow.producers.s3_import.definition import (
    MANDATORY_ROLES,
    ImportDefinition,
    ImportType,
    identity_identifier,
)
from inflow.producers.s3_import.exceptions import (
    DefinitionError,
    FetchError,
    FileFormatError,
    InfrastructureFault,
    OwnershipLost,
    RowError,
    S3ImportError,
)
from inflow.producers.s3_import.mapping import CompiledMapping, Role, compile_mapping
from inflow.producers.s3_import.naming import shown
from inflow.producers.s3_import.pgp import (
    GPG_TIMEOUT,
    IS_ENCRYPTED,
    DecryptStream,
    Keyring,
    looks_encrypted,
    verify_then,
)
from inflow.producers.s3_import.projects import ProjectRouting, RoutedRecords, routed_records
from inflow.producers.s3_import.reading import (
    DEFAULT_LIMITS,
    EMPTY_ROW,
    MAX_COLUMNS,
    CountingReader,
    ReadAhead,
    ReadLimits,
    Row,
    check_columns,
    reader_for,
    text_stream,
)
from inflow.producers.s3_import.records import RECORD_BY_TYPE, TOPIC_BY_TYPE, RecordBuilder
from inflow.producers.s3_import.runs import FAILED, PROCESSING, RunRecord, outcome, outcome_message
from inflow.producers.s3_import.storage import Folder, S3File, transient_s3_error
from inflow.schemas.exceptions import SerdeError
from inflow.schemas.serde import AvroSerde

log = logging.getLogger(__name__)
ProgressFn = Callable[[int, int], None]
CHECK_EVERY = 2_000  # rows between ownership checks and progress updates
CHECKPOINT_ROWS = 100_000
CHECKPOINT_SECONDS = 5.0
MISSING_COLUMN = {
    "User ID": "Column value for the selected identifier attribute (ID) is absent",
    "Anonymous ID": "Column value for the selected identifier attribute (Anonymous ID) is absent",
}


@dataclass
class ImportContext:
    """What a file import needs from the poller: ownership checks and checkpoints in the ledger."""

    still_owned: Callable[[], bool] = lambda: True
    checkpoint: Callable[[int], None] = lambda _row: None
    progress: ProgressFn | None = None
    resume_after: int = 0
    checkpoint_rows: int = CHECKPOINT_ROWS
    limits: ReadLimits = DEFAULT_LIMITS
    gpg_timeout: float = GPG_TIMEOUT
    max_columns: int = MAX_COLUMNS
    track_outcomes: bool = False  # True: the run stays PROCESSING until the processors applied its rows
    # The workspace's identifiers now (control.workspaces; None: unknown), for an import whose rows are
    # identified by an identifier column instead of User ID.
    identifiers: Callable[[], tuple[str, ...] | None] = lambda: None
    routing: ProjectRouting | None = None  # the import's workspace is a portfolio (projects.py)


def row_producer(kafka: KafkaSettings) -> KafkaProducer:
    """The producer of ingest records: durable, size-checked, delivery failures raised by ``flush()``.

    Delivery reports only for failures: a per-row Python callback would cost as much as the encoding.
    A bounded local queue (64 MB) is the back-pressure: memory stays flat when the broker is slow.
    """
    queue: dict[str, Any] = {
        "delivery.report.only.error": True,
        "queue.buffering.max.kbytes": 65_536,
        "queue.buffering.max.messages": 200_000,
    }
    topics = sorted({kafka.topic(topic) for topic in TOPIC_BY_TYPE.values()})
    return KafkaProducer(kafka, name="s3-import", batch_topics=topics, **queue)


def flush_rows(out: KafkaProducer) -> None:
    """Wait until every produced row is acknowledged, however long the broker takes; a row the broker
    refused fails the file (the ledger must never record it as imported)."""
    while True:
        try:
            out.flush(30)
            return
        except KafkaFault as exc:
            if exc.kind is Kind.FATAL:
                raise  # the producer is unusable: the poller stops with the reason
            if exc.error is None and len(out):  # only slow: nothing failed yet, keep waiting
                log.warning("waiting for the broker to acknowledge %d rows", len(out))
                continue
            if exc.kind is Kind.RETRIABLE:  # the broker is away: the file is retried, not failed
                raise InfrastructureFault(f"Kafka unavailable: {exc}", kafka=True) from exc
            raise S3ImportError(f"the broker rejected rows: {exc}") from exc


def infrastructure_fault(exc: BaseException) -> InfrastructureFault | None:
    """The fault of S3 or Kafka behind ``exc`` (unreachable, timed out, a 5xx answer), or None when the
    file itself is the problem."""
    if isinstance(exc, InfrastructureFault):
        return exc
    if isinstance(exc, KafkaFault):
        if exc.kind is Kind.RETRIABLE:
            return InfrastructureFault(f"Kafka unavailable: {exc}", kafka=True)
        return None
    if isinstance(exc, FetchError):
        return InfrastructureFault(str(exc)) if exc.retriable else None
    if transient_s3_error(exc):
        return InfrastructureFault(f"S3 unavailable: {type(exc).__name__}: {exc}")
    return None


class FileImport:
    """One file of one import; ``run()`` returns the finished run record, never raises for bad data."""

    def __init__(
        self,
        d: ImportDefinition,
        folder: Folder,
        file: S3File,
        run: RunRecord,
        out: KafkaProducer,
        serde: AvroSerde,
        ctx: ImportContext,
    ) -> None:
        self.d, self.folder, self.file, self.run_record, self.out, self.ctx = d, folder, file, run, out, ctx
        self.serde = serde
        self.topic = out.kafka.topic(TOPIC_BY_TYPE[d.type])
        self.received_at = datetime.now(UTC)
        self.builder = self._builder_for(d)
        self.routed: RoutedRecords | None = None  # rows of several workspaces (a portfolio's import)
        self.report: IO[str] | None = None
        self.last_row = ctx.resume_after
        self.bytes_read = 0

    def run(self) -> RunRecord:
        """Import the file. Raises :class:`InfrastructureFault` when S3 or Kafka failed (the file is
        retried later, from its last checkpoint), :class:`OwnershipLost` on a handover, a fatal
        :class:`KafkaFault`; every fault of the file itself ends in the returned record."""
        run = self.run_record
        try:
            self._import()
        except OwnershipLost:
            raise
        except KafkaFault as exc:
            if exc.kind is Kind.FATAL:
                raise  # the producer cannot go on: the poller stops with the reason
            self._raise_if_infrastructure(exc)
            run.finish(FAILED, f"writing rows to Kafka failed: {exc}")
        except S3ImportError as exc:
            self._raise_if_infrastructure(exc)
            run.finish(FAILED, str(exc))
        except Exception as exc:  # a file must never stop the poller: whatever it triggers fails it alone
            self._raise_if_infrastructure(exc)
            log.exception("import %s: %s: unexpected error", self.d.name, shown(self.file.name))
            run.finish(FAILED, f"Unexpected error while importing the file: {type(exc).__name__}: {exc}")
        else:
            self._written(run)
        self._upload_report()
        return run

    def _written(self, run: RunRecord) -> None:
        """Every good row is acknowledged by Kafka. Aux rows are stored then (nothing applies them); users
        and events rows wait for the processors when outcomes are tracked (``outcomes.py`` ends the run)."""
        run.rows_written = run.rows_added
        if self.d.type is ImportType.AUX_DATA:
            run.aux_data_added_count, run.aux_data_failed_count = run.rows_added, run.rows_failed
        if self.ctx.track_outcomes and run.rows_written and self.d.type is not ImportType.AUX_DATA:
            run.rows_added = 0
            run.status = PROCESSING
            run.message = f"{run.rows_written} rows written; the processors are applying them"
            return
        status = outcome(run.rows_added, run.rows_failed)
        run.finish(status, outcome_message(status, run.unmapped_columns))

    def _raise_if_infrastructure(self, exc: BaseException) -> None:
        fault = infrastructure_fault(exc)
        if fault is not None:
            self._discard_report()  # the retry reads the file again and reports every bad row again
            raise fault from exc

    def _discard_report(self) -> None:
        if self.report is not None:
            self.report.close()
            self.report = None

    def _import(self) -> None:
        body = self.folder.open(self.file)
        counting = CountingReader(body)
        self._counter = counting
        ahead: ReadAhead | None = None
        try:
            if self.d.encrypted:
                self._import_encrypted(counting)  # GnuPG's feeder thread already reads ahead
            else:
                ahead = ReadAhead(counting)
                buffered = io.BufferedReader(ahead, 1 << 20)
                if looks_encrypted(buffered.peek(64)[:64]):
                    raise FileFormatError(IS_ENCRYPTED)
                self._consume(buffered)
        finally:
            if ahead is not None:
                ahead.close()
            with contextlib.suppress(Exception):
                body.close()

    def _import_encrypted(self, counting: CountingReader) -> None:
        with Keyring(self.d.pgp) as keyring:
            timeout = self.ctx.gpg_timeout
            if self.d.pgp and self.d.pgp.signing_key:
                verify_then(keyring, lambda: self.folder.open(self.file), timeout)
            stream = DecryptStream(keyring, counting, timeout=timeout)
            try:
                self._consume(stream.stdout)
            except BaseException as exc:
                stream.close()
                if stream.timed_out:  # the reader saw GnuPG's output end early because it was stopped
                    stream.finish()
                if stream.feed_error is not None:  # S3 failed mid-stream: that, not the cut data, is why
                    raise stream.feed_error from exc
                raise
            stream.finish()

    def _consume(self, binary: IO[bytes]) -> None:
        read = reader_for(self.d.file_format)
        table = read(text_stream(binary), [m.column for m in self.d.mappings], self.ctx.limits)
        mapping = compile_mapping(table.columns, self.d.mappings, UTC, self.d.tz)
        mapping.unmapped_columns = table.unmapped
        check_columns(table.header, self.ctx.max_columns)
        self._identity()
        self._check_mandatory_columns(mapping)
        self.run_record.unmapped_columns = mapping.unmapped_columns
        self.routed = routed_records(
            self.d, self.ctx.routing, mapping.roles(), self._builder_for, self._template_encoder
        )
        self._rows(table.rows, mapping)

    def _identity(self) -> None:
        """An identity column must still name an identifier of the workspace when the file runs (identity
        resolution may have been switched off since the import was defined): else the file fails."""
        column = self.d.identity
        if column is None:
            return
        try:
            name = identity_identifier(self.d, self.ctx.identifiers())
        except DefinitionError as exc:
            raise FileFormatError(str(exc)) from None
        assert name is not None
        self.builder.identity = (column.moe_attr or column.column, name)

    def _check_mandatory_columns(self, mapping: CompiledMapping) -> None:
        present = mapping.roles()
        identity = self.builder.identity
        for roles, label in MANDATORY_ROLES[self.d.type]:
            if identity is not None and Role.USER_ID in roles:
                if not any(c.attr == identity[0] for c in mapping.converters):
                    raise FileFormatError(
                        f"Column value for the selected identifier attribute ({identity[0]}) is absent in "
                        "the file"
                    )
                continue
            if not roles & present:
                raise FileFormatError(MISSING_COLUMN.get(label, "event datetime missing") + " in the file")

    def _rows(self, rows: Iterator[Row], mapping: CompiledMapping) -> None:
        """The hot loop: locals only, counters kept in variables and stored on the run at check points."""
        run, ctx, out = self.run_record, self.ctx, self.out
        encode: Callable[[Any], bytes] | None = None  # built on the first good row (needs a sample)
        build = self.routed.build if self.routed is not None else self.builder.build
        convert, topic = mapping.convert, self.topic
        produce, check, poll = out.produce, out.check, out.poll
        if self.d.type is ImportType.AUX_DATA:  # by key to its partition, where a lookup reads it
            produce = self._aux_producer()
        resume_after, checkpoint_rows = ctx.resume_after, ctx.checkpoint_rows
        last_checkpoint, last_time = resume_after, time.monotonic()
        next_check = CHECK_EVERY
        total = added = skipped = 0
        n = resume_after
        try:
            for row in rows:
                n = row.number
                total += 1
                cells = row.cells
                if cells is None:
                    if row.error == EMPTY_ROW:
                        skipped += 1
                    else:
                        self._fail(n, row.error or "unreadable row")
                else:
                    try:
                        key, record = build(n, *convert(cells))
                        if encode is None:
                            encode = self._encoder(record)
                        value = encode(record)
                    except (RowError, SerdeError) as exc:  # SerdeError: a value the Avro schema refuses
                        self._fail(n, str(exc))
                    else:
                        try:
                            if n > resume_after:
                                produce(topic, value, key)  # a full local queue waits for acknowledgements
                            else:  # acknowledged before a handover: counted again, not re-sent
                                check(topic, key, value)
                        except RecordTooLarge as exc:  # over the topic's size limit: this row fails alone
                            self._fail(n, f"row too large for Kafka: {exc}")
                        else:
                            added += 1
                if n >= next_check:
                    next_check = n + CHECK_EVERY
                    self.last_row, run.rows_total, run.rows_added, run.rows_skipped = n, total, added, skipped
                    poll(0)
                    if not ctx.still_owned():
                        raise OwnershipLost(
                            f"{shown(self.file.name)}: ledger partition moved to another poller at row {n}"
                        )
                    if ctx.progress:
                        ctx.progress(n, self._counter.bytes_read)
                    if (
                        n - last_checkpoint >= checkpoint_rows
                        or time.monotonic() - last_time >= CHECKPOINT_SECONDS
                    ):
                        flush_rows(out)
                        ctx.checkpoint(n)
                        last_checkpoint, last_time = n, time.monotonic()
        finally:  # a file-level failure mid-file still reports the rows read so far
            self.last_row, run.rows_total, run.rows_added, run.rows_skipped = n, total, added, skipped
        flush_rows(out)
        if ctx.progress:
            ctx.progress(n, self._counter.bytes_read)

    def _aux_producer(self) -> Callable[..., None]:
        partitions = len(topic_partitions(new_admin(self.out.kafka), self.topic))
        produce = self.out.produce

        def to_partition(topic: str, value: bytes, key: bytes) -> None:
            produce(topic, value, key, partition=aux_partition(key, partitions))

        return to_partition

    def _encoder(self, sample: dict[str, Any]) -> Callable[[Any], bytes]:
        """The per-file template encoder (checked against fastavro on this first record); one per
        workspace when the rows are routed to a portfolio's projects."""
        if self.routed is not None:
            return self.routed.encode
        return self._template_encoder(self.builder, sample)

    def _template_encoder(self, builder: RecordBuilder, sample: dict[str, Any]) -> Callable[[Any], bytes]:
        return template_encoder(
            self.serde, RECORD_BY_TYPE[self.d.type], self.topic, builder.constants, sample
        )

    def _builder_for(self, d: ImportDefinition) -> RecordBuilder:
        folder = f"{d.bucket}/{d.folder}"
        builder = RecordBuilder(d, folder, self.file.name, self.run_record.run_id, self.received_at)
        main = getattr(self, "builder", None)  # a project's builder identifies rows as the import's does
        if main is not None:
            builder.identity = main.identity
        return builder

    def handover(self) -> int:
        """Flush rows in flight so the next owner can resume right after ``last_row``."""
        flush_rows(self.out)
        return self.last_row

    def _fail(self, row: int, reason: str) -> None:
        self.run_record.rows_failed += 1
        if self.report is None:
            self._raw = tempfile.SpooledTemporaryFile(max_size=1 << 20, mode="w+b")  # noqa: SIM115
            self.report = io.TextIOWrapper(self._raw, encoding="utf-8", newline="")  # type: ignore[arg-type]
            self._writer = csv.writer(self.report)
            self._writer.writerow(["row", "reason"])
        self._writer.writerow([row, reason])

    def _upload_report(self) -> None:
        if self.report is None:
            return
        key = self.folder.report_key(self.file)
        try:
            self.report.flush()
            self._raw.seek(0)
            self.folder.put_report(key, self._raw)  # streamed from the spooled file, never whole in memory
            self.run_record.error_report_key = key
        except S3ImportError as exc:
            self.run_record.message += f"; error report not written: {exc}"
        finally:
            self.report.close()
