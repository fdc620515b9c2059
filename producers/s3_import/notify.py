"""Status e-mails over SMTP, as MoEngage sends them: when a file import succeeds, and when an import fails,
with the reason. Up to 10 recipients per import; a failing mail server never fails the import.
"""

from __future__ import annotations

import logging
import smtplib
from email.message import EmailMessage

from inflow.producers.s3_import.definition import ImportDefinition
from inflow.producers.s3_import.runs import RunRecord
from inflow.producers.s3_import.settings import SmtpSettings

log = logging.getLogger(__name__)


def run_message(d: ImportDefinition, run: RunRecord, sender: str) -> EmailMessage:
    """The e-mail for one file run: status in the subject, counts and the reason in the body."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(d.notify_emails)
    msg["Subject"] = f"[Inflow] Import {d.name}: {run.file_name} {run.status}"
    lines = [
        f"Import: {d.name} ({d.type.value}) in workspace {d.workspace_id}",
        f"File: s3://{d.bucket}/{d.folder}/{run.file_name} ({run.file_size} bytes)",
        f"Status: {run.status}",
        f"Started: {run.started_at.isoformat()}",
        f"Completed: {run.completed_at.isoformat() if run.completed_at else '-'}",
        f"Rows in file: {run.rows_total}  Added: {run.rows_added}  Failed: {run.rows_failed}",
        f"Rows skipped: {run.rows_skipped}",
    ]
    if run.message:
        lines.append(f"Reason: {run.message}" if run.status == "FAILED" else f"Message: {run.message}")
    if run.error_report_key:
        lines.append(f"Error report: s3://{d.bucket}/{run.error_report_key}")
    msg.set_content("\n".join(lines) + "\n")
    return msg


def failure_message(d: ImportDefinition, reason: str, sender: str) -> EmailMessage:
    """The e-mail when a run fails before any file (credentials, folder path)."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(d.notify_emails)
    msg["Subject"] = f"[Inflow] Import {d.name} FAILED"
    msg.set_content(
        f"Import: {d.name} ({d.type.value})\nFolder: s3://{d.bucket}/{d.folder}\nStatus: FAILED\n"
        f"Reason: {reason}\n"
    )
    return msg


class Notifier:
    """Sends messages with the configured SMTP server; without one, logs what it would send."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    def send(self, msg: EmailMessage) -> bool:
        if not msg["To"]:
            return False
        s = self.settings
        if not s.host:
            log.info("no SMTP host configured; not sent: %s", msg["Subject"])
            return False
        try:
            with smtplib.SMTP(s.host, s.port, timeout=s.timeout_s) as smtp:
                if s.starttls:
                    smtp.starttls()
                if s.username and s.password:
                    smtp.login(s.username, s.password.get_secret_value())
                smtp.send_message(msg)
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("status e-mail %r not sent: %s", msg["Subject"], exc)
            return False
        return True
