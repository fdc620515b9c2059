"""Settings of the poller and of status e-mails (environment ``INFLOW_POLLER_*`` / ``INFLOW_SMTP_*``).

Kept here until they join ``config/settings.py``; library code receives them as arguments.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from inflow.producers.s3_import.reading import CELL_LIMIT, MAX_COLUMNS

MAX_FILE_BYTES = 500 * 1024 * 1024  # MoEngage (newer docs): less than 500 MB per CSV/JSON file
MAX_FILES_PER_RUN = 250  # MoEngage: at most 250 files per import run
TRANSIENT_ATTEMPTS = 30  # MoEngage retries a failed file up to 30 attempts before it is FAILED for good


class PollerSettings(BaseSettings):
    """How often the poller looks at schedules, and the consumer group pollers share the ledger in."""

    model_config = SettingsConfigDict(env_prefix="INFLOW_POLLER_", extra="forbid")

    tick_seconds: float = Field(5.0, gt=0, description="how often schedules are evaluated")
    group_id: str | None = Field(
        None, description="ledger consumer group; default <prefix>.s3-import-pollers"
    )
    checkpoint_rows: int = Field(100_000, gt=0, description="rows between ledger checkpoints of a file")
    owner: str | None = Field(None, description="poller id written in ledger claims; default host-pid")
    max_line_chars: int = Field(
        13_107_200,
        ge=CELL_LIMIT,
        description="longest line of a file read at once (characters; 100 cells of 128 KB); a longer CSV "
        "line fails the file, a longer NDJSON line fails its row",
    )
    max_json_depth: int = Field(
        64, ge=2, le=200, description="deepest nesting of an NDJSON row; a deeper row fails alone"
    )
    gpg_timeout_seconds: float = Field(
        300.0,
        gt=0,
        description="GnuPG making no progress this long while the import waits on it fails the file",
    )
    retry_min_seconds: float = Field(
        5.0, gt=0, description="first wait before a file or listing that met an S3/Kafka outage is retried"
    )
    retry_max_seconds: float = Field(
        300.0, gt=0, description="longest wait between retries after an S3/Kafka outage (doubling up to it)"
    )

    max_file_bytes: int = Field(
        MAX_FILE_BYTES, gt=0, description="largest file imported (MoEngage: less than 500 MB per file)"
    )
    max_columns: int = Field(MAX_COLUMNS, gt=0, description="most columns of a file (MoEngage: 100)")
    max_files_per_run: int = Field(
        MAX_FILES_PER_RUN, gt=0, description="most files one run imports (MoEngage: 250); the rest wait"
    )
    transient_attempts: int = Field(
        TRANSIENT_ATTEMPTS,
        ge=1,
        description="attempts of a file that meets S3/Kafka outages before it is FAILED (MoEngage: 30)",
    )
    track_outcomes: bool = Field(
        True,
        description="keep a run PROCESSING until the processors reported an outcome for each written row "
        "(created, updated, failed, skipped); off: a run ends once its rows are written",
    )
    apply_timeout_seconds: float = Field(
        3600.0,
        gt=0,
        description="a run whose written rows got no new outcome for this long ends with the unconfirmed "
        "rows counted as added, and says so",
    )


class SmtpSettings(BaseSettings):
    """The SMTP server that sends import status e-mails; unset host disables e-mails (logged instead)."""

    model_config = SettingsConfigDict(env_prefix="INFLOW_SMTP_", extra="forbid")

    host: str | None = None
    port: int = 25
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = False
    sender: str = "inflow@localhost"
    timeout_s: float = 30.0
