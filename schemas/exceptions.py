"""Errors raised by the schema catalogue, the Avro serde and the Schema Registry client."""

from inflow.errors import InflowError


class SerdeError(InflowError):
    """A record could not be encoded or decoded; the message names the record, framing or fingerprint."""


class RegistryError(SerdeError):
    """The Schema Registry refused a request or could not be reached."""

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable
