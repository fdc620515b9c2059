"""Helpers for tests: wait on conditions with deadlines (never bare sleeps), read topics to the end."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, Message

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.1, what: str = "condition"
) -> T:
    """Return the first truthy value of ``predicate`` or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def transient(error: KafkaError | None) -> bool:
    """Errors a consumer reports while a just-created topic propagates to the broker's metadata."""
    return error is not None and (
        error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._PARTITION_EOF) or error.retriable()
    )


def consume_n(consumer: Consumer, n: int, timeout: float = 30.0) -> list[Message]:
    """Poll until ``n`` messages arrived (fails on timeout); errors other than EOF fail the test."""
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: got {len(out)} of {n} messages")
        for msg in consumer.consume(num_messages=min(1000, n - len(out)), timeout=0.5):
            if transient(msg.error()):
                continue
            if msg.error():
                raise AssertionError(f"consumer error: {msg.error()}")
            out.append(msg)
    return out


def consume_until_quiet(consumer: Consumer, quiet: float = 2.0, timeout: float = 60.0) -> list[Message]:
    """Read until nothing new arrives for ``quiet`` seconds; used to prove that nothing extra was written."""
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    while time.monotonic() - last < quiet and time.monotonic() < deadline:
        batch = consumer.consume(num_messages=1000, timeout=0.2)
        for msg in batch:
            if transient(msg.error()):
                continue
            if msg.error():
                raise AssertionError(f"consumer error: {msg.error()}")
            out.append(msg)
        if batch:
            last = time.monotonic()
    return out
