"""Where a user's state lives: partitions of ``ingest.records`` by identifier value, not by workspace.

Every ingest record is keyed by its workspace and the value of its first identifier (``W:alice`` for a
customer_id, ``W:email=a@x`` for another identifier), and librdkafka's default partitioner
(``consistent_random``: CRC-32 of the key modulo the partition count) puts it on a partition. The worker
that owns that partition owns everything stored under that route:

- the identity-index entry of the identifier value (which user it resolves to),
- the profile, device book and seen marks of every user whose *slot* is that route. A user's slot is the
  route of the identifier that created it, so with one identifier (the default ``customer_id``) a user's
  records, its index entry and its profile are all on one partition, and nothing needs a second hop.

:func:`partition_of` computes the same CRC-32 in Python (``zlib.crc32``, a test pins it against the
broker's placement), so a worker knows, for any identifier or slot, which partition holds it, also after
the topic has grown. A record that reached another partition (a producer with another partitioner, an
identifier that resolves to a user homed elsewhere) is forwarded there; correctness never depends on the
producer's choice.
"""

from __future__ import annotations

import zlib

from inflow.processors.workspaces import CUSTOMER_ID


def identifier_route(workspace_id: str, name: str, value: str) -> str:
    """``W:value`` for customer_id (the gateway's key), ``W:name=value`` for any other identifier."""
    if name == CUSTOMER_ID:
        return f"{workspace_id}:{value}"
    return f"{workspace_id}:{name}={value}"


def partition_of(route: str, partitions: int) -> int:
    """librdkafka's ``consistent`` partitioner: CRC-32 of the key bytes modulo the partition count."""
    return zlib.crc32(route.encode("utf-8", "surrogatepass")) % partitions
