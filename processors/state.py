"""The lane's state as key-value tables with JSON values, written back only when a record is done.

Reads see the record's own pending writes; :meth:`State.flush` hands them to the backing tables (Faust
tables in the worker, dicts in unit tests) after the record's outputs were handed to the producer, so on
the single producer connection the outputs are queued before the state that says they happened.
Decoded values are cached: a lane partition has exactly one writer, so the cache cannot go stale while
the partition stays assigned (it is cleared on every rebalance).
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

_DELETED = object()


class JsonTable:
    """JSON values over a bytes-to-bytes mapping, with pending writes and a bounded decode cache."""

    def __init__(self, backing: MutableMapping[Any, Any], cache_limit: int = 100_000) -> None:
        self.backing = backing
        self._pending: dict[bytes, Any] = {}
        self._cache: dict[bytes, Any] = {}
        self._cache_limit = cache_limit

    def get(self, key: bytes) -> Any:
        if key in self._pending:
            value = self._pending[key]
            return None if value is _DELETED else value
        if key in self._cache:
            return self._cache[key]
        raw = self.backing.get(key)
        value = None if raw is None else json.loads(raw)
        if len(self._cache) >= self._cache_limit:
            self._cache.clear()
        self._cache[key] = value
        return value

    def put(self, key: bytes, value: Any) -> None:
        self._pending[key] = value

    def delete(self, key: bytes) -> None:
        self._pending[key] = _DELETED

    def flush(self) -> None:
        """Write pending values to the backing table (in the worker: RocksDB plus changelog)."""
        for key, value in self._pending.items():
            if value is _DELETED:
                self._cache.pop(key, None)
                if self.backing.get(key) is not None:
                    del self.backing[key]
            else:
                self._cache[key] = value
                self.backing[key] = json.dumps(value, separators=(",", ":")).encode()
        self._pending.clear()

    def discard(self) -> None:
        """Forget pending writes (the record was rejected half way)."""
        self._pending.clear()

    def clear_cache(self) -> None:
        self._cache.clear()


@dataclass
class State:
    """Everything one lane owns: identity index, profiles, device books, device index, seen records."""

    identity: JsonTable
    users: JsonTable
    devices: JsonTable
    device_index: JsonTable
    seen: JsonTable
    tables: list[JsonTable] = field(init=False)

    def __post_init__(self) -> None:
        self.tables = [self.identity, self.users, self.devices, self.device_index, self.seen]

    @classmethod
    def in_memory(cls) -> State:
        """State over plain dicts, for unit tests and the benchmark's baseline."""
        return cls(*(JsonTable({}) for _ in range(5)))

    def flush(self) -> None:
        for table in self.tables:
            table.flush()

    def discard(self) -> None:
        for table in self.tables:
            table.discard()

    def clear_cache(self) -> None:
        for table in self.tables:
            table.clear_cache()
