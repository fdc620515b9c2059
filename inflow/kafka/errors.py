"""One classification of Kafka errors for every component: retriable, fatal or too large.

librdkafka reports each failure as a :class:`confluent_kafka.KafkaError` that knows whether it is fatal
(the client cannot go on: an idempotent producer fenced, bad credentials) and whether a retry may succeed
(broker unreachable, leader moving). A record over the size limit is neither: retrying cannot help, and the
caller must reject that one record and go on. Every producer, consumer and view of this package raises the
typed errors below, so a caller decides with one ``except`` what to retry, what to reject and when to stop.
"""

from __future__ import annotations

from enum import Enum

from confluent_kafka import KafkaError, KafkaException

from inflow.errors import InflowError


class Kind(Enum):
    RETRIABLE = "retriable"  # try again later: the broker or the network will come back
    FATAL = "fatal"  # the client is unusable: restart the component, fix the settings
    TOO_LARGE = "too_large"  # this record can never be written: reject it, keep going
    PERMANENT = "permanent"  # this request can never succeed as made (unknown topic, authorization)


_TOO_LARGE = {KafkaError.MSG_SIZE_TOO_LARGE}
_PERMANENT = {
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.INVALID_RECORD,
    KafkaError.INVALID_REQUIRED_ACKS,
}


def classify(err: KafkaError) -> Kind:
    """What a caller should do about ``err``; librdkafka's own flags first, then the error code."""
    if err.fatal():
        return Kind.FATAL
    code = err.code()
    if code in _TOO_LARGE:
        return Kind.TOO_LARGE
    if code in _PERMANENT:
        return Kind.PERMANENT
    # Timeouts, transport failures, leader elections, throttling: librdkafka marks most of them retriable,
    # and a failure it does not mark either way is treated as transient rather than dropping data.
    return Kind.RETRIABLE


class KafkaFault(InflowError):
    """A Kafka operation failed; ``kind`` says whether to retry, reject the record or stop."""

    kind: Kind = Kind.RETRIABLE

    def __init__(self, message: str, *, kind: Kind | None = None, error: KafkaError | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind
        self.error = error
        self.retriable = self.kind is Kind.RETRIABLE


class RecordTooLarge(KafkaFault):
    """A record over the topic's message size limit; refused before it reaches the broker."""

    kind = Kind.TOO_LARGE

    def __init__(self, topic: str, size: int, limit: int) -> None:
        super().__init__(
            f"record of {size} bytes is over the {limit}-byte limit of topic {topic}", kind=Kind.TOO_LARGE
        )
        self.topic = topic
        self.size = size
        self.limit = limit


class DeliveryFailed(KafkaFault):
    """The broker did not acknowledge one or more records (after librdkafka's own retries)."""


def fault(err: KafkaError, doing: str) -> KafkaFault:
    """The typed error for ``err`` met while ``doing`` something (``"writing to inflow.events"``)."""
    return DeliveryFailed(f"{doing}: {err.str()}", kind=classify(err), error=err)


def from_exception(exc: KafkaException, doing: str) -> KafkaFault:
    """The typed error for a raised :class:`KafkaException` (its first argument is the KafkaError)."""
    err = exc.args[0] if exc.args else None
    if isinstance(err, KafkaError):
        return fault(err, doing)
    return KafkaFault(f"{doing}: {exc}")
