"""The poller: evaluates every import's schedule, discovers new files, and imports the files whose ledger
partition it owns (see ``ledger.py``), one at a time, so a run never overlaps another of the same import.

A fault of a file fails that file (or only its bad rows) with the reason in run history and the error
report, and the poller goes on with the next file. A fault of S3 or Kafka (unreachable, timed out, a 5xx
answer) is not the file's: the file stays claimed at its last checkpoint, run history shows it RETRYING
with the reason, and it is tried again after a wait that doubles up to a maximum, never marked FAILED.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.message import EmailMessage
from functools import partial
from typing import Any

from tenacity import RetryCallState, Retrying, wait_exponential

from inflow.config.file import ImportLimits
from inflow.config.secrets import SecretBox
from inflow.config.settings import KafkaSettings
from inflow.imports.history import IMPORT_TYPES
from inflow.kafka.errors import KafkaFault, Kind
from inflow.observability.health import Heartbeat
from inflow.producers.s3_import.budgets import check_budget
from inflow.producers.s3_import.definition import ImportDefinition
from inflow.producers.s3_import.exceptions import (
    FetchError,
    InfrastructureFault,
    OwnershipLost,
    S3ImportError,
)
from inflow.producers.s3_import.importer import (
    FileImport,
    ImportContext,
    ProgressFn,
    infrastructure_fault,
    row_producer,
)
from inflow.producers.s3_import.ledger import CLAIMED, DONE, Ledger, ledger_key, partition_for
from inflow.producers.s3_import.metrics import FILE_SECONDS, FILES, FILES_RUNNING
from inflow.producers.s3_import.naming import shown
from inflow.producers.s3_import.notify import Notifier, failure_message, run_message
from inflow.producers.s3_import.outcomes import OutcomeTracker, pending_from_history
from inflow.producers.s3_import.progress import FileProgress
from inflow.producers.s3_import.projects import routing_for
from inflow.producers.s3_import.reading import ReadLimits
from inflow.producers.s3_import.runs import (
    FAILED,
    PROCESSING,
    QUEUED,
    RETRYING,
    WAITING,
    RunRecord,
    RunStore,
    run_id_for,
)
from inflow.producers.s3_import.settings import PollerSettings, SmtpSettings
from inflow.producers.s3_import.storage import Folder, S3File
from inflow.producers.s3_import.store import DefinitionStore
from inflow.schemas.serde import AvroSerde
from inflow.workspaces.registry import WorkspaceRegistry

log = logging.getLogger(__name__)
WORKSPACES_READY_S = 30.0  # how long a check of a workspace's identifiers waits for control.workspaces


@dataclass
class RunSummary:
    """What one run of an import did, file by file."""

    import_name: str
    files: list[RunRecord] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    not_owned: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Backoff:
    """A file (or an import's listing) that met an S3 or Kafka outage: when to try again, and why."""

    failures: int
    at: float  # time.monotonic()
    reason: str


def too_big(size: int, limit: int) -> str:
    mb = 1024 * 1024
    most = f"{limit // mb} MB" if limit % mb == 0 else f"{limit} bytes"
    return f"File size exceeds the limit: {size} bytes, files must be less than {most}"


def default_owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Poller:
    """One poller process's state: definitions, ledger ownership, producers, and the last run per import."""

    def __init__(
        self,
        kafka: KafkaSettings,
        box: SecretBox,
        *,
        default_endpoint: str | None = None,
        settings: PollerSettings | None = None,
        smtp: SmtpSettings | None = None,
        serde: AvroSerde | None = None,
        import_limits: Mapping[str, ImportLimits] | None = None,
        configured_identifiers: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """``configured_identifiers``: the YAML file's identifiers per workspace, used for a workspace that
        ``control.workspaces`` does not know (as the workers do)."""
        self.settings = settings or PollerSettings()
        self.configured_identifiers = dict(configured_identifiers or {})
        self.import_limits = dict(import_limits or {})  # per workspace; MoEngage's defaults otherwise
        self.serde = serde or AvroSerde(kafka.schema_registry_url)
        self.kafka = kafka
        self.default_endpoint = default_endpoint
        self.owner = self.settings.owner or default_owner()
        self.workspaces = WorkspaceRegistry(kafka, self.serde).start()  # followed: disable/enable
        self.store = DefinitionStore(kafka, self.serde, box, identifiers_of=self.identifiers_of)
        self.ledger = Ledger(kafka, self.serde, self.owner, self.settings.group_id)
        self.runs = RunStore(kafka, self.serde)
        self.runs.follow()  # row budgets and runs awaiting the processors are read from run history
        self.tracker = (
            OutcomeTracker(kafka, self.serde, self.settings.apply_timeout_seconds)
            if self.settings.track_outcomes
            else None
        )
        if self.tracker is not None and not self.tracker.available():
            log.warning(
                "%s does not exist: runs end when their rows are written (no created/updated split)",
                kafka.topic("processors.outcomes"),
            )
            self.tracker = None
        self.out = row_producer(kafka)
        self.notifier = Notifier(smtp or SmtpSettings())
        self.paused: set[str] = set()  # imports whose workspace is disabled: run again once enabled
        self._waiting_written: dict[str, str] = {}  # ledger key -> reason of its written WAITING record
        self._queued_written: set[str] = set()  # ledger keys whose QUEUED run record is written
        self.parked: set[str] = set()  # imports with a file waiting for its row budget: looked at every tick
        self.more_files: set[str] = set()  # imports whose last run stopped at the files-per-run limit
        self._pending_loaded = False
        self.triggered: dict[str, datetime] = {}  # import -> the API trigger this poller has run
        self.last_due: dict[str, datetime] = {}
        self._owned_seen: set[int] = set()
        self.backoff: dict[str, Backoff] = {}  # by ledger key, or by import name for its listing
        self._wait = wait_exponential(
            multiplier=self.settings.retry_min_seconds,
            min=self.settings.retry_min_seconds,
            max=self.settings.retry_max_seconds,
        )
        self.stop = threading.Event()
        # /health: the loop turns at least every tick; a file beats at every check point (2,000 rows), and
        # GnuPG may stay silent up to its timeout.
        self.heartbeat = Heartbeat(self.settings.tick_seconds + self.settings.gpg_timeout_seconds + 60)
        self._closed = False

    # --- ownership --------------------------------------------------------------------------------
    def wait_for_partitions(self, timeout: float = 60.0) -> set[int]:
        """Join the group and read the owned ledger partitions to their end."""
        deadline = datetime.now(UTC).timestamp() + timeout
        while datetime.now(UTC).timestamp() < deadline and not self.stop.is_set():
            self.ledger.pump(0.2)
            assigned = self.ledger.assigned_partitions()
            if assigned and assigned == self.ledger.owned_partitions() and self.workspaces.ready:
                return assigned
        if not self.workspaces.ready:
            log.warning("workspaces not read to their end yet: disabled workspaces are not known")
        return self.ledger.owned_partitions()

    # --- scheduling -------------------------------------------------------------------------------
    def tick(self, now: datetime | None = None) -> list[RunSummary]:
        """Run every import whose latest scheduled occurrence has not been run by this poller yet."""
        now = now or datetime.now(UTC)
        self.store.refresh()
        self.ledger.pump(0)
        self.runs.refresh()
        self.collect_outcomes()
        # Ledger partitions this poller came to own since the last tick (at start, after a rebalance or a
        # broker outage): files of theirs that fell due while nobody owned them were skipped as not owned,
        # and a one-time schedule never falls due again. Every import that has fallen due is looked at again;
        # the ledger skips the files already imported.
        owned = self.ledger.owned_partitions()
        gained, self._owned_seen = owned - self._owned_seen, owned
        if gained:  # runs of those partitions may be waiting for their outcomes: look in history again
            self._pending_loaded = False
        done = []
        for d in list(self.store.definitions.values()):
            if d.archived or self.stop.is_set():
                continue
            due = d.schedule.latest_due(now, d.created_at or now)
            if due is not None and self.last_due.get(d.name) != due:
                self.last_due[d.name] = due
                log.info("import %s: scheduled run of %s", d.name, due.isoformat())
            elif due is not None and gained:
                log.info(
                    "import %s: ledger partitions %s newly owned, looking at its files again",
                    d.name,
                    sorted(gained),
                )
            elif d.name in self.paused and self.disabled_reason(d) is None:
                log.info("import %s: workspace %s enabled again, running", d.name, d.workspace_id)
            elif d.triggered_at is not None and self.triggered.get(d.name) != d.triggered_at:
                self.triggered[d.name] = d.triggered_at
                log.info("import %s: run triggered through the API at %s", d.name, d.triggered_at.isoformat())
            elif d.name in self.more_files:
                log.info("import %s: another run for the files left by the files-per-run limit", d.name)
            elif d.name in self.parked:
                log.debug("import %s: looking at files parked for the row budget", d.name)
            elif not self._retry_due(d.name):
                continue
            else:
                log.info("import %s: retrying after an S3 or Kafka outage", d.name)
            done.append(self.run_import(d))
        return done

    def identifiers_of(self, workspace_id: str) -> tuple[str, ...] | None:
        """A workspace's identifiers (customer_id first) as ``control.workspaces`` holds them, else as the
        YAML file declares them; None for a workspace known to neither."""
        if not self.workspaces.ready:
            self.workspaces.wait_ready(WORKSPACES_READY_S)
        workspace = self.workspaces.get(workspace_id)
        if workspace is not None:
            return ("customer_id", *workspace.identifiers)
        configured = self.configured_identifiers.get(workspace_id)
        return None if configured is None else ("customer_id", *configured)

    def disabled_reason(self, d: ImportDefinition) -> str | None:
        """Why the import may not run now (its workspace is disabled), or None."""
        workspace = self.workspaces.get(d.workspace_id)
        if workspace is not None and workspace.disabled:
            return f"workspace {d.workspace_id} is disabled: the file waits until it is enabled"
        return None

    # --- outcomes of written rows -----------------------------------------------------------------
    def collect_outcomes(self, budget_s: float = 1.0) -> list[RunRecord]:
        """Count the processors' outcomes into the runs awaiting them; end and report the complete ones."""
        if self.tracker is None:
            return []
        if not self._pending_loaded and self.ledger.owned_partitions():
            self._pending_loaded = True
            self._track_pending()
        ended, progressed = self.tracker.pump(0, budget_s=budget_s)
        for run in progressed:
            self._write_run(run)
        for run in ended:
            self._write_run(run)
            log.info(
                "import %s: %s %s: %d rows, %d added, %d updated, %d failed, %d skipped %s",
                run.import_name,
                run.file_name,
                run.status,
                run.rows_total,
                run.rows_added,
                run.rows_updated,
                run.rows_failed,
                run.rows_skipped,
                run.message,
            )
            d = self.store.definitions.get(run.import_name)
            if d is not None:
                self._notify(partial(run_message, d, run, self.notifier.settings.sender))
        return ended

    def _track_pending(self) -> None:
        """Runs in history whose rows were written (by this poller before a restart, or by another one
        whose ledger partition this poller now owns) and whose outcomes are not all counted."""
        assert self.tracker is not None
        for run in pending_from_history(self.runs.latest()):
            bucket, _, folder = run.folder.partition("/")
            if self.ledger.owns(ledger_key(run.import_name, bucket, folder, run.file_name)):
                rows = max(run.rows_total, run.rows_written + run.rows_failed + run.rows_skipped)
                self.tracker.expect(run, rows)

    def _write_run(self, run: RunRecord) -> None:
        try:
            self.runs.write(run)
        except S3ImportError as exc:
            log.warning("import %s: run history not written: %s", run.import_name, exc)

    # --- retries after S3 or Kafka outages --------------------------------------------------------
    def _retry_due(self, name: str) -> bool:
        """True when a file or the listing of import ``name`` waits for a retry whose time has come."""
        prefix = f"{name}|"
        now = time.monotonic()
        return any(b.at <= now for k, b in self.backoff.items() if k == name or k.startswith(prefix))

    def _back_off(self, key: str, reason: str) -> Backoff:
        """Wait before ``key`` is tried again: the first wait is ``retry_min_seconds``, doubling on every
        failure in a row up to ``retry_max_seconds``."""
        failures = self.backoff[key].failures + 1 if key in self.backoff else 1
        state = RetryCallState(Retrying(), None, (), {})
        state.attempt_number = failures
        entry = Backoff(failures, time.monotonic() + self._wait(state), reason)
        self.backoff[key] = entry
        return entry

    def run_forever(self) -> None:
        """Until SIGTERM/SIGINT: tick, then wait; a running file finishes first (it can't stop midway)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())
        try:
            self.wait_for_partitions()
            while not self.stop.is_set():
                try:
                    self.tick()
                except S3ImportError as exc:
                    log.error("poller tick failed: %s", exc)
                except KafkaFault as exc:
                    if exc.kind is Kind.FATAL:
                        raise  # a Kafka client cannot go on: stop with the reason
                    log.error("poller tick failed: %s", exc)
                except Exception:  # one import's surprise never stops the others: log it, go on
                    log.exception("poller tick failed")
                waited = 0.0
                while waited < self.settings.tick_seconds and not self.stop.is_set():
                    self.heartbeat.beat()
                    self.ledger.pump(0.2)
                    self.collect_outcomes(budget_s=0.3)  # outcomes of large files keep flowing in
                    waited += 0.5
        finally:
            self.close()

    # --- one run ----------------------------------------------------------------------------------
    def run_import(
        self,
        d: ImportDefinition,
        progress: Callable[[S3File], ProgressFn | None] | None = None,
    ) -> RunSummary:
        """Discover the import's files and import each new one this poller owns."""
        summary = RunSummary(d.name)
        try:
            folder = Folder(d, self.default_endpoint)
            files = folder.list_files()
        except FetchError as exc:
            summary.error = str(exc)
            if exc.retriable:  # S3 is away, not the import's fault: list again after a wait
                wait = self._back_off(d.name, str(exc))
                summary.error = f"{exc}; retrying in {wait.at - time.monotonic():.0f} s"
                log.warning("import %s: %s", d.name, summary.error)
                return summary
            log.error("import %s: %s", d.name, exc)
            reason = str(exc)
            self._notify(lambda: failure_message(d, reason, self.notifier.settings.sender))
            return summary
        self.backoff.pop(d.name, None)
        disabled = self.disabled_reason(d)
        if disabled:
            self.paused.add(d.name)
            log.warning("import %s: %s", d.name, disabled)
        else:
            self.paused.discard(d.name)
        self.more_files.discard(d.name)
        self.parked.discard(d.name)
        todo: list[tuple[S3File, str, Any]] = []
        for file in files:
            key = ledger_key(d.name, d.bucket, d.folder, file.name)
            name = shown(file.name)
            waiting = self.backoff.get(key)
            if waiting is not None and waiting.at > time.monotonic():
                left = waiting.at - time.monotonic()
                summary.skipped[name] = f"retrying in {left:.0f} s after: {waiting.reason}"
                continue
            self.ledger.pump(0)
            if not self.ledger.owns(key):
                summary.not_owned.append(name)
                continue
            decision = self.ledger.decide(key, d.retry.max_attempts)
            if not decision.process:
                summary.skipped[name] = decision.reason
                self.backoff.pop(key, None)
                continue
            if disabled:  # nothing is claimed: the file stays pending, run history says why
                summary.skipped[name] = disabled
                self._write_waiting(d, file, key, decision.attempt, disabled)
                continue
            todo.append((file, key, decision))
        limit = self.settings.max_files_per_run
        for file, key, decision in todo[limit:]:  # MoEngage takes at most 250 files per run
            reason = f"More than {limit} files in one run: this file is imported by the next run"
            summary.skipped[shown(file.name)] = reason
            self._write_queued(d, file, key, decision.attempt, reason)
            self.more_files.add(d.name)
        todo = todo[:limit]
        for file, key, decision in todo:
            self._write_queued(d, file, key, decision.attempt, "")
        for file, key, decision in todo:
            if self.stop.is_set():
                break
            run = self._one_file(d, folder, file, key, decision, summary, progress)
            if run is not None:
                summary.files.append(run)
        return summary

    def _one_file(
        self,
        d: ImportDefinition,
        folder: Folder,
        file: S3File,
        key: str,
        decision: Any,
        summary: RunSummary,
        progress: Callable[[S3File], ProgressFn | None] | None,
    ) -> RunRecord | None:
        """Import one file of a run after the file-level checks (size, row budget); None when it waits."""
        name = shown(file.name)
        self.ledger.pump(0)
        if not self.ledger.owns(key):
            summary.not_owned.append(name)
            return None
        if file.size > self.settings.max_file_bytes:
            return self._fail_file(
                d, file, key, decision.attempt, too_big(file.size, self.settings.max_file_bytes)
            )
        try:
            verdict = check_budget(
                d,
                folder,
                file,
                self.import_limits.get(d.workspace_id, ImportLimits()),
                self.runs.latest(),
                datetime.now(UTC),
                self.settings.gpg_timeout_seconds,
            )
        except InfrastructureFault as exc:
            return self._retry_later(d, file, key, decision.attempt, exc)
        except Exception as exc:  # the file's own problem: importing it fails it with the reason
            fault = infrastructure_fault(exc)
            if fault is not None:
                return self._retry_later(d, file, key, decision.attempt, fault)
            log.info("import %s: %s: rows not counted (%s); importing", d.name, name, exc)
        else:
            if verdict.fail:
                return self._fail_file(d, file, key, decision.attempt, verdict.fail)
            if verdict.park:
                summary.skipped[name] = verdict.park
                self.parked.add(d.name)
                self._write_waiting(d, file, key, decision.attempt, verdict.park)
                return None
        self._waiting_written.pop(key, None)
        self._queued_written.discard(key)
        log.info("import %s: %s: %s", d.name, name, decision.reason)
        claimed = (decision.entry or {}).get("etag")  # set when the file was claimed before
        if claimed and claimed != file.etag:  # resume the version claimed: a replaced file fails
            file = replace(file, etag=claimed)
        try:
            run = self._import_file(d, folder, file, key, decision.attempt, decision.resume_after, progress)
        except OwnershipLost as exc:
            log.warning("import %s: %s", d.name, exc)
            summary.not_owned.append(name)
            return None
        except InfrastructureFault as exc:
            return self._retry_later(d, file, key, decision.attempt, exc)
        self.backoff.pop(key, None)
        return run

    def _fail_file(self, d: ImportDefinition, file: S3File, key: str, attempt: int, reason: str) -> RunRecord:
        """The file fails as a whole before a row is read: ledger DONE FAILED, run history says why."""
        run = self._run_record(d, file, attempt)
        run.finish(FAILED, reason)
        folder = f"{d.bucket}/{d.folder}"
        self.ledger.write(
            key,
            self.ledger.entry(
                import_name=d.name,
                folder=folder,
                file_name=file.name,
                state=DONE,
                run_id=run.run_id,
                claimed_at=run.started_at,
                status=FAILED,
                etag=file.etag,
                attempts=attempt,
            ),
        )
        self._write_run(run)
        self.backoff.pop(key, None)
        self._waiting_written.pop(key, None)
        self._queued_written.discard(key)
        log.warning("import %s: %s FAILED: %s", d.name, run.file_name, reason)
        self._notify(lambda: run_message(d, run, self.notifier.settings.sender))
        return run

    def _write_queued(self, d: ImportDefinition, file: S3File, key: str, attempt: int, reason: str) -> None:
        """A QUEUED run record (once per file and reason): the file waits for the files before it."""
        if key in self._queued_written:
            return
        run = self._run_record(d, file, attempt)
        run.status, run.message = QUEUED, reason
        self._write_run(run)
        self._queued_written.add(key)

    def _write_waiting(self, d: ImportDefinition, file: S3File, key: str, attempt: int, reason: str) -> None:
        """A WAITING run record (once per file and kind of reason): the run that imports it later
        overwrites it."""
        kind = reason.split(":", 1)[0]
        if self._waiting_written.get(key) == kind:
            return
        run = self._run_record(d, file, attempt)
        run.status, run.message = WAITING, reason
        try:
            self.runs.write(run)
        except S3ImportError as exc:
            log.warning("import %s: run history not written: %s", d.name, exc)
            return
        FILES.labels(d.workspace_id, d.name, WAITING).inc()
        self._waiting_written[key] = kind

    def _run_record(self, d: ImportDefinition, file: S3File, attempt: int) -> RunRecord:
        folder = f"{d.bucket}/{d.folder}"
        return RunRecord(
            run_id_for(d.name, folder, file.name, attempt),
            d.name,
            folder,
            shown(file.name),
            file.size,
            datetime.now(UTC),
            workspace_id=d.workspace_id,
            import_type=IMPORT_TYPES[d.type.value],
            attempt=attempt,
        )

    def _retry_later(
        self, d: ImportDefinition, file: S3File, key: str, attempt: int, exc: InfrastructureFault
    ) -> RunRecord:
        """Run history shows the file RETRYING with the reason; its ledger entry stays CLAIMED at the last
        checkpoint, so the retry (by this poller or the next owner) resumes there."""
        wait = self._back_off(key, str(exc))
        attempts = self.settings.transient_attempts
        if wait.failures >= attempts:  # MoEngage: up to 30 attempts, then FAILED for good
            try:
                return self._fail_file(d, file, key, attempt, f"Failed after {attempts} attempts: {exc}")
            except (S3ImportError, KafkaFault) as lost:  # Kafka is still away: keep retrying
                if isinstance(lost, KafkaFault) and lost.kind is Kind.FATAL:
                    raise
                log.warning("import %s: %s: not marked FAILED yet: %s", d.name, shown(file.name), lost)
        run = self._run_record(d, file, attempt)
        run.status = RETRYING
        run.message = f"{exc}; retry {wait.failures} in {wait.at - time.monotonic():.0f} s"
        log.warning("import %s: %s: %s", d.name, run.file_name, run.message)
        FILES.labels(d.workspace_id, d.name, RETRYING).inc()
        try:
            self.runs.write(run)
        except S3ImportError as write_error:  # Kafka is away too: the log line is all there is
            log.warning("import %s: run history not written: %s", d.name, write_error)
        return run

    def _import_file(
        self,
        d: ImportDefinition,
        folder: Folder,
        file: S3File,
        key: str,
        attempt: int,
        resume_after: int,
        progress: Callable[[S3File], ProgressFn | None] | None,
    ) -> RunRecord:
        run_id = run_id_for(d.name, f"{d.bucket}/{d.folder}", file.name, attempt)
        started = datetime.now(UTC)
        entry_args: dict[str, Any] = {
            "import_name": d.name,
            "folder": f"{d.bucket}/{d.folder}",
            "file_name": file.name,
            "run_id": run_id,
            "claimed_at": started,
            "etag": file.etag,
            "attempts": attempt,
        }
        self.ledger.write(key, self.ledger.entry(state=CLAIMED, rows_acked=resume_after, **entry_args))
        run = self._run_record(d, file, attempt)
        run.run_id, run.started_at, run.status = run_id, started, PROCESSING
        self.runs.write(run)
        partition = partition_for(key, self.ledger.partitions)
        owned = [True]
        ctx = ImportContext(
            resume_after=resume_after,
            checkpoint_rows=self.settings.checkpoint_rows,
            limits=ReadLimits(self.settings.max_line_chars, self.settings.max_json_depth),
            gpg_timeout=self.settings.gpg_timeout_seconds,
            max_columns=self.settings.max_columns,
            track_outcomes=self.tracker is not None,
            identifiers=lambda: self.identifiers_of(d.workspace_id),
            routing=routing_for(d.workspace_id, self.workspaces.get),
        )
        job = FileImport(d, folder, file, run, self.out, self.serde, ctx)
        tracker = FileProgress(
            run,
            d.workspace_id,
            job.topic,
            self.runs,
            progress(file) if progress else None,
            self.heartbeat.beat,
        )
        ctx.progress = tracker

        def checkpoint(row: int) -> None:
            self.ledger.write(key, self.ledger.entry(state=CLAIMED, rows_acked=row, **entry_args))

        def on_revoke(partitions: set[int]) -> None:
            if partition in partitions and owned[0]:
                owned[0] = False
                checkpoint(job.handover())  # the next owner resumes right after the last acknowledged row

        ctx.checkpoint = checkpoint

        def still_owned() -> bool:
            self.ledger.pump(0)  # serves the group's callbacks: a revocation flips ``owned``
            if self.stop.is_set() and owned[0]:  # SIGTERM: checkpoint and leave; the next owner resumes
                owned[0] = False
                checkpoint(job.handover())
            return owned[0]

        ctx.still_owned = still_owned
        self.ledger.add_revoke_hook(on_revoke)
        running = FILES_RUNNING.labels(d.workspace_id)
        running.inc()
        try:
            run = job.run()
        except InfrastructureFault as exc:
            if not exc.kafka and owned[0]:  # S3 failed: rows read so far are in flight; keep them
                try:
                    checkpoint(job.handover())
                except (S3ImportError, KafkaFault) as lost:
                    if isinstance(lost, KafkaFault) and lost.kind is Kind.FATAL:
                        raise
                    log.warning("import %s: no checkpoint after the outage: %s", d.name, lost)
            raise
        finally:
            running.dec()
            tracker.count()
            self.ledger.remove_revoke_hook(on_revoke)
        if not owned[0]:
            raise OwnershipLost(f"{shown(file.name)}: handed over to another poller")
        self.runs.write(run)
        self.ledger.write(
            key, self.ledger.entry(state=DONE, status=run.status, rows_acked=job.last_row, **entry_args)
        )
        FILES.labels(d.workspace_id, d.name, run.status).inc()
        FILE_SECONDS.labels(d.workspace_id).observe((datetime.now(UTC) - started).total_seconds())
        log.info(
            "import %s: %s %s: %d rows, %d added, %d failed, %d skipped %s",
            d.name,
            run.file_name,
            run.status,
            run.rows_total,
            run.rows_added,
            run.rows_failed,
            run.rows_skipped,
            run.message,
        )
        if run.status == PROCESSING and self.tracker is not None:  # ends once the processors applied it
            self.tracker.expect(run, job.last_row)
            return run
        self._notify(lambda: run_message(d, run, self.notifier.settings.sender))
        return run

    def _notify(self, build: Callable[[], EmailMessage]) -> None:
        """Send a status e-mail; a message that cannot be built or sent is logged, never fatal."""
        try:
            self.notifier.send(build())
        except Exception:
            log.exception("status e-mail not sent")

    def close(self) -> None:
        """Flush rows, leave the ledger group so partitions move at once, close clients (once)."""
        if self._closed:
            return
        self._closed = True
        self.out.close(30)
        if self.tracker is not None:
            self.tracker.close()
        self.workspaces.stop()
        self.ledger.close()
        self.store.close()
        self.runs.close()
