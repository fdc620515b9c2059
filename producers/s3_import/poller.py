"""The poller: evaluates every import's schedule, discovers new files, and imports the files whose ledger
partition it owns (see ``ledger.py``), one at a time, so a run never overlaps another of the same import.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from inflow.config.secrets import SecretBox
from inflow.config.settings import KafkaSettings
from inflow.kafka.errors import KafkaFault, Kind
from inflow.producers.s3_import.definition import ImportDefinition
from inflow.producers.s3_import.exceptions import FetchError, OwnershipLost, S3ImportError
from inflow.producers.s3_import.importer import FileImport, ImportContext, ProgressFn, row_producer
from inflow.producers.s3_import.ledger import CLAIMED, DONE, Ledger, ledger_key, partition_for
from inflow.producers.s3_import.naming import shown
from inflow.producers.s3_import.notify import Notifier, failure_message, run_message
from inflow.producers.s3_import.reading import ReadLimits
from inflow.producers.s3_import.runs import RunRecord, RunStore, run_id_for
from inflow.producers.s3_import.settings import PollerSettings, SmtpSettings
from inflow.producers.s3_import.storage import Folder, S3File
from inflow.producers.s3_import.store import DefinitionStore
from inflow.schemas.serde import AvroSerde

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What one run of an import did, file by file."""

    import_name: str
    files: list[RunRecord] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    not_owned: list[str] = field(default_factory=list)
    error: str | None = None


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
    ) -> None:
        self.settings = settings or PollerSettings()
        self.serde = serde or AvroSerde(kafka.schema_registry_url)
        self.kafka = kafka
        self.default_endpoint = default_endpoint
        self.owner = self.settings.owner or default_owner()
        self.store = DefinitionStore(kafka, self.serde, box)
        self.ledger = Ledger(kafka, self.serde, self.owner, self.settings.group_id)
        self.runs = RunStore(kafka, self.serde)
        self.out = row_producer(kafka)
        self.notifier = Notifier(smtp or SmtpSettings())
        self.last_due: dict[str, datetime] = {}
        self.stop = threading.Event()
        self._closed = False

    # --- ownership --------------------------------------------------------------------------------
    def wait_for_partitions(self, timeout: float = 60.0) -> set[int]:
        """Join the group and read the owned ledger partitions to their end."""
        deadline = datetime.now(UTC).timestamp() + timeout
        while datetime.now(UTC).timestamp() < deadline and not self.stop.is_set():
            self.ledger.pump(0.2)
            assigned = self.ledger.assigned_partitions()
            if assigned and assigned == self.ledger.owned_partitions():
                return assigned
        return self.ledger.owned_partitions()

    # --- scheduling -------------------------------------------------------------------------------
    def tick(self, now: datetime | None = None) -> list[RunSummary]:
        """Run every import whose latest scheduled occurrence has not been run by this poller yet."""
        now = now or datetime.now(UTC)
        self.store.refresh()
        self.ledger.pump(0)
        done = []
        for d in list(self.store.definitions.values()):
            if d.archived or self.stop.is_set():
                continue
            due = d.schedule.latest_due(now, d.created_at or now)
            if due is None or self.last_due.get(d.name) == due:
                continue
            self.last_due[d.name] = due
            log.info("import %s: scheduled run of %s", d.name, due.isoformat())
            done.append(self.run_import(d))
        return done

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
                    self.ledger.pump(0.5)
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
            log.error("import %s: %s", d.name, exc)
            reason = str(exc)
            self._notify(lambda: failure_message(d, reason, self.notifier.settings.sender))
            return summary
        for file in files:
            if self.stop.is_set():
                break
            key = ledger_key(d.name, d.bucket, d.folder, file.name)
            self.ledger.pump(0)
            if not self.ledger.owns(key):
                summary.not_owned.append(shown(file.name))
                continue
            decision = self.ledger.decide(key, d.retry.max_attempts)
            if not decision.process:
                summary.skipped[shown(file.name)] = decision.reason
                continue
            log.info("import %s: %s: %s", d.name, shown(file.name), decision.reason)
            try:
                run = self._import_file(
                    d, folder, file, key, decision.attempt, decision.resume_after, progress
                )
            except OwnershipLost as exc:
                log.warning("import %s: %s", d.name, exc)
                summary.not_owned.append(shown(file.name))
                continue
            summary.files.append(run)
        return summary

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
        run = RunRecord(run_id, d.name, f"{d.bucket}/{d.folder}", shown(file.name), file.size, started)
        self.runs.write(run)
        partition = partition_for(key, self.ledger.partitions)
        owned = [True]
        ctx = ImportContext(
            resume_after=resume_after,
            progress=progress(file) if progress else None,
            checkpoint_rows=self.settings.checkpoint_rows,
            limits=ReadLimits(self.settings.max_line_chars, self.settings.max_json_depth),
            gpg_timeout=self.settings.gpg_timeout_seconds,
        )
        job = FileImport(d, folder, file, run, self.out, self.serde, ctx)

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
        try:
            run = job.run()
        finally:
            self.ledger.remove_revoke_hook(on_revoke)
        if not owned[0]:
            raise OwnershipLost(f"{shown(file.name)}: handed over to another poller")
        self.runs.write(run)
        self.ledger.write(
            key, self.ledger.entry(state=DONE, status=run.status, rows_acked=job.last_row, **entry_args)
        )
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
        self.ledger.close()
        self.store.close()
        self.runs.close()
