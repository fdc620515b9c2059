"""Errors of the identity-resolution processors, under Inflow's one root."""

from inflow.errors import InflowError


class ProcessorError(InflowError):
    """Root of the processors' errors."""


class Rejection(ProcessorError):
    """A record that cannot be applied (blocked id, no identifier, bad operator); it travels as data."""

    def __init__(self, reason: str, *, outcome: str = "rejected") -> None:
        super().__init__(reason)
        self.reason = reason
        self.outcome = outcome


class LaneFramingError(ProcessorError):
    """An ingest message whose bytes are not an Inflow Avro record."""
