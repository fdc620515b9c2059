"""What every record of one request shares: workspace, request id, receive time, client address."""

from __future__ import annotations

import ipaddress
import os
import random
import secrets
import string
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from inflow.producers.bulk_api.times import to_ms

_ALPHABET = string.ascii_letters + string.digits
_NAMESPACE = uuid.UUID("5b1f8f52-3c1e-4d55-9a51-0e6b8f3d2a10")
_VARIANT = "89ab"
# The variant digit for each random hex digit: its low two bits pick one of 8, 9, a, b.
_VARIANT_OF = {digit: _VARIANT[int(digit, 16) & 3] for digit in "0123456789abcdef"}
# event_uuids must be unique, not secret: a Mersenne Twister seeded from the OS (reseeded in forked children,
# whose first uuids must not be the parent's next ones: the drawn ones are dropped there).
_random = random.Random(secrets.randbits(256))
_UUIDS_PER_DRAW = 64
_drawn: list[str] = []


def _after_fork() -> None:
    _random.seed(secrets.randbits(256))
    _drawn.clear()


os.register_at_fork(after_in_child=_after_fork)


def _draw_uuids() -> None:
    """``_UUIDS_PER_DRAW`` version-4 UUIDs from one draw of the generator, formatted without UUID objects."""
    h = f"{_random.getrandbits(128 * _UUIDS_PER_DRAW):0{32 * _UUIDS_PER_DRAW}x}"
    _drawn.extend(
        [
            f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-4{h[i + 13 : i + 16]}-"
            f"{_VARIANT_OF[h[i + 16]]}{h[i + 17 : i + 20]}-{h[i + 20 : i + 32]}"
            for i in range(0, 32 * _UUIDS_PER_DRAW, 32)
        ]
    )


_ID_SPACE = len(_ALPHABET) ** 8


def new_request_id() -> str:
    """Eight letters and digits, the shape of MoEngage's request ids (``kXwpDESb``).

    Uniform over the 62**8 ids like eight ``secrets.choice`` calls, from one 48-bit OS draw (rejection
    sampling) instead of eight: a system call costs more than the rest of this function.
    """
    n = secrets.randbits(48)
    while n >= _ID_SPACE:
        n = secrets.randbits(48)
    chars = []
    for _ in range(8):
        n, digit = divmod(n, 62)
        chars.append(_ALPHABET[digit])
    return "".join(chars)


def client_ip(forwarded_for: str | None, peer: str | None) -> str | None:
    """Left-most valid address of ``X-Forwarded-For`` (the original client), else the socket peer."""
    if forwarded_for:
        first = forwarded_for.split(",", 1)[0].strip()
        try:
            return str(ipaddress.ip_address(first))
        except ValueError:
            pass
    return peer


Networks = Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]


def _trusted(address: str | None, proxies: Networks) -> bool:
    if address is None:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def client_address(forwarded_for: str | None, peer: str | None, proxies: Networks) -> str | None:
    """The client's address: ``X-Forwarded-For`` counts only when the socket peer is a trusted proxy.

    A client can write any ``X-Forwarded-For`` it likes, so its hops are read from the right (the ones
    the trusted proxies appended) and the first address that is not a trusted proxy is the client; when
    every hop is a trusted proxy, the left-most valid one is. From any other peer the header is ignored.
    """
    if not forwarded_for or not _trusted(peer, proxies):
        return peer
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        try:
            address = str(ipaddress.ip_address(hop))
        except ValueError:
            return peer  # a hop no trusted proxy would have written: trust nothing left of it
        if not _trusted(address, proxies):
            return address
    return client_ip(forwarded_for, peer)


@dataclass(slots=True)
class RequestContext:
    """Per-request facts stamped on every record; ``idempotency_key`` makes event_uuids repeatable."""

    workspace_id: str
    request_id: str
    received_at: datetime
    client_ip: str | None
    idempotency_key: str | None = None
    _counter: int = field(default=0)
    _uuid_of: Callable[[], str] = field(init=False)
    received_ms: int = field(init=False)
    bound: Any = field(default=None, init=False, repr=False)  # the request's Avro encoders (elements.py)

    def __post_init__(self) -> None:
        self._uuid_of = self._random_uuid if not self.idempotency_key else self._derived_uuid
        self.received_ms = to_ms(self.received_at)

    def next_event_uuid(self) -> str:
        """Random per record; with an Idempotency-Key, derived from it so a retried request dedupes."""
        return self._uuid_of()

    @property
    def event_uuids(self) -> Callable[[], str]:
        """:meth:`next_event_uuid` itself, for loops that call it once per record."""
        return self._uuid_of

    @staticmethod
    def _random_uuid() -> str:
        """A random version-4 UUID (hot path: drawn and formatted ``_UUIDS_PER_DRAW`` at a time)."""
        while True:  # (a loop, should another thread take the last one first)
            try:
                return _drawn.pop()
            except IndexError:
                _draw_uuids()

    def _derived_uuid(self) -> str:
        self._counter += 1
        return str(
            uuid.uuid5(_NAMESPACE, f"{self.workspace_id}\x1f{self.idempotency_key}\x1f{self._counter}")
        )
