"""The one classification of Kafka errors (pure)."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from inflow.kafka.errors import DeliveryFailed, Kind, RecordTooLarge, classify, fault, from_exception


def test_fatal_error_is_fatal_whatever_its_code() -> None:
    err = KafkaError(KafkaError._FENCED, "fenced", fatal=True)
    assert classify(err) is Kind.FATAL
    assert fault(err, "writing").kind is Kind.FATAL
    assert not fault(err, "writing").retriable


def test_too_large_is_its_own_kind() -> None:
    err = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    assert classify(err) is Kind.TOO_LARGE
    assert not fault(err, "writing").retriable


def test_transport_and_timeout_errors_are_retriable() -> None:
    for code in (
        KafkaError._TRANSPORT,
        KafkaError._MSG_TIMED_OUT,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError._TIMED_OUT,
    ):
        err = KafkaError(code)
        assert classify(err) is Kind.RETRIABLE, code
        assert fault(err, "writing").retriable


def test_unknown_topic_and_authorization_are_permanent() -> None:
    for code in (KafkaError._UNKNOWN_TOPIC, KafkaError.TOPIC_AUTHORIZATION_FAILED):
        assert classify(KafkaError(code)) is Kind.PERMANENT


def test_fault_message_names_what_was_done_and_the_error() -> None:
    typed = fault(KafkaError(KafkaError._TRANSPORT, "broker down"), "writing to inflow.events")
    assert isinstance(typed, DeliveryFailed)
    assert str(typed) == "writing to inflow.events: broker down"
    assert typed.error is not None and typed.error.code() == KafkaError._TRANSPORT


def test_from_exception_keeps_the_kafka_error() -> None:
    typed = from_exception(KafkaException(KafkaError(KafkaError._TRANSPORT, "x")), "reading")
    assert typed.kind is Kind.RETRIABLE and typed.error is not None


def test_record_too_large_says_size_limit_and_topic() -> None:
    exc = RecordTooLarge("inflow.profiles", 2_000_000, 1_000_000)
    assert exc.kind is Kind.TOO_LARGE and not exc.retriable
    assert "2000000 bytes" in str(exc) and "1000000-byte limit" in str(exc) and "inflow.profiles" in str(exc)
