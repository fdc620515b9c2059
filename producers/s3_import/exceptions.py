"""Errors of the S3 import component; messages that users see are MoEngage's wording."""

from inflow.errors import ConfigError, InflowError


class S3ImportError(InflowError):
    """Root of the S3 import errors."""


class DefinitionError(ConfigError):
    """An import definition is invalid or a duplicate; the message is the reason shown to the user."""


class FetchError(S3ImportError):
    """The folder or file could not be listed or read (credentials, folder path, network)."""


class FileFormatError(S3ImportError):
    """The file as a whole cannot be imported (encoding, header, cell size, zero data rows)."""


class PgpError(S3ImportError):
    """Decryption or signature verification failed; the message is MoEngage's PGP error."""


class RowError(S3ImportError):
    """One row cannot be imported; travels as data into the error report, never stops the file."""


class OwnershipLost(S3ImportError):
    """This poller no longer owns the ledger partition of the file it is importing."""

    retriable = True


class InfrastructureFault(S3ImportError):
    """S3 or Kafka could not be reached or answered with a transient error: not the file's fault. The file
    stays claimable and is retried later with backoff; it is never marked FAILED for this."""

    retriable = True

    def __init__(self, reason: str, *, kafka: bool = False) -> None:
        super().__init__(reason)
        self.kafka = kafka  # the broker was the problem: rows in flight may not be acknowledged
