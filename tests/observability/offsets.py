"""Committing a group's offset from a test, waiting out a broker that is still loading its coordinator."""

from __future__ import annotations

from confluent_kafka import Consumer, KafkaException, TopicPartition

from tests.support import wait_for


def commit_offset(bootstrap: str, group: str, topic: str, partition: int, offset: int) -> None:
    """Commit ``offset`` for ``group`` on one partition; retriable errors (coordinator loading right after a
    broker start) are retried until a deadline."""
    committer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})

    def commit() -> bool:
        try:
            committer.commit(offsets=[TopicPartition(topic, partition, offset)], asynchronous=False)
        except KafkaException as exc:
            if not exc.args[0].retriable():
                raise
            return False
        return True

    try:
        wait_for(commit, 60, interval=0.5, what=f"a commit of group {group}")
    finally:
        committer.close()
