"""The lanes' state on disk: one RocksDB database (``rocksdict``) per state table and lane partition.

A lane partition's databases are opened when the partition is assigned to this worker and closed when it
is revoked. The lane writes them once per batch, and only after the batch's outputs and changelog records
were acknowledged by the broker (:meth:`TableStore.persist`): until then the batch's writes wait in memory,
where the batch's own reads see them. Each persist also stores, in the same atomic RocksDB write, the
changelog offset the database now reflects, so a database on disk is always exactly a prefix of its
changelog and a restart (or a partition coming back) reads only the changelog records after that offset.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import rocksdict

# The order of the tables in :class:`~inflow.processors.state.State`; also the changelog topic names.
TABLES = ("identity", "users", "devices", "device_index", "seen")
SEEN = TABLES.index("seen")
# Where each database keeps the changelog offset it reflects. Every state key starts with a workspace id,
# so a key starting with NUL is never one of them.
OFFSET_KEY = b"\x00inflow\x00changelog-offset"


class TableStore:
    """One table of one lane partition: its RocksDB database and the batch's writes not yet persisted."""

    def __init__(
        self,
        path: Path,
        write_buffer_bytes: int,
        block_cache_bytes: int,
        ttl_s: int | None,
        memtable_filter: bool = True,  # False: only for bench/rocksdb_lookup_bench.py's baseline
    ):
        self.path = path
        self._options = (write_buffer_bytes, block_cache_bytes, ttl_s, memtable_filter)
        self._pending: dict[bytes, bytes | None] = {}
        self.db = self._open()

    def _open(self) -> rocksdict.Rdict:
        write_buffer_bytes, block_cache_bytes, ttl_s, memtable_filter = self._options
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_write_buffer_size(write_buffer_bytes)
        options.set_max_write_buffer_number(2)
        table = rocksdict.BlockBasedOptions()
        table.set_block_cache(rocksdict.Cache(block_cache_bytes))
        # Most lookups miss (every new event's seen mark, every new identifier value): a bloom filter
        # answers those without reading the files' blocks, however many days of marks are on disk.
        table.set_bloom_filter(10, False)
        options.set_block_based_table_factory(table)
        # The same for the memtable, where the newest keys are: a miss there walked the skip list (5-8 µs
        # per lookup from Python against 0.8-1.8 with this filter: bench/rocksdb_lookup_bench.py); the
        # filter costs a tenth of the memtable's size.
        if memtable_filter:
            options.set_memtable_whole_key_filtering(True)
            options.set_memtable_prefix_bloom_ratio(0.1)
        # Seen marks expire after the de-duplication window: RocksDB drops them at compaction.
        access = rocksdict.AccessType.read_write() if ttl_s is None else rocksdict.AccessType.with_ttl(ttl_s)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return rocksdict.Rdict(str(self.path), options, access_type=access)

    # --- reads and the batch's writes -------------------------------------------------------------
    def get(self, key: bytes) -> bytes | None:
        if key in self._pending:
            return self._pending[key]
        value = self.db.get(key)
        return None if value is None else bytes(value)

    def stage(self, writes: list[tuple[bytes, bytes | None]]) -> None:
        """The batch's writes (None: delete), kept until :meth:`persist`."""
        self._pending.update(writes)

    @property
    def dirty(self) -> bool:
        return bool(self._pending)

    def persist(self, changelog_offset: int | None) -> None:
        """Write the batch (its changelog records are on the broker) and the offset it reaches, at once."""
        if not self._pending and changelog_offset is None:
            return
        batch = rocksdict.WriteBatch(raw_mode=True)
        put, delete = batch.put, batch.delete
        for key, value in self._pending.items():
            if value is None:
                delete(key)
            else:
                put(key, value)
        if changelog_offset is not None:
            batch.put(OFFSET_KEY, str(changelog_offset).encode())
        self.db.write(batch)
        self._pending.clear()

    def discard(self) -> None:
        """Forget the batch's writes (it failed or the partition was revoked before they were sent)."""
        self._pending.clear()

    # --- restoring from the changelog -------------------------------------------------------------
    def changelog_offset(self) -> int | None:
        """The offset of the last changelog record this database reflects; None: nothing yet."""
        raw = self.db.get(OFFSET_KEY)
        return None if raw is None else int(bytes(raw))

    def restore(self, records: list[tuple[bytes, bytes | None]], last_offset: int) -> None:
        """Apply changelog records (None: tombstone) up to ``last_offset``, in one write."""
        self._pending.clear()
        self._pending.update(records)
        self.persist(last_offset)

    def wipe(self) -> None:
        """Drop everything: the database is not a prefix of the changelog (the topic was recreated)."""
        self.db.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self._pending.clear()
        self.db = self._open()

    def close(self) -> None:
        self._pending.clear()
        self.db.close()


class TableView(MutableMapping[bytes, bytes]):
    """One table as the lane engine reads and writes it: the store of the lane partition being applied
    (the lane calls :meth:`LaneStores.use` before it applies a partition's records)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.store: TableStore | None = None

    def _require(self) -> TableStore:
        if self.store is None:
            raise RuntimeError(f"table {self.name}: no lane partition in use")
        return self.store

    def get(self, key: bytes, default: Any = None) -> Any:
        value = self._require().get(key)
        return default if value is None else value

    def __getitem__(self, key: bytes) -> bytes:
        value = self._require().get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._require().stage([(key, value)])

    def __delitem__(self, key: bytes) -> None:
        self._require().stage([(key, None)])

    def write_many(self, writes: list[tuple[bytes, bytes | None]]) -> None:
        """A batch's writes (None: delete); persisted after the changelog has them."""
        self._require().stage(writes)

    def keys_from(self, start: bytes) -> Iterator[bytes]:
        """Stored keys from ``start`` on, in key order (a RocksDB seek; the batch's pending writes are not
        seen)."""
        keys: Iterator[Any] = iter(self._require().db.keys(from_key=start))
        return (bytes(k) for k in keys if bytes(k) != OFFSET_KEY)

    def __iter__(self) -> Iterator[bytes]:
        keys: Iterator[Any] = iter(self._require().db.keys())
        return (bytes(k) for k in keys if bytes(k) != OFFSET_KEY)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class LaneStores:
    """The open databases of the lane partitions this worker owns, and the views the engine uses."""

    def __init__(
        self,
        folder: Path,
        write_buffer_bytes: int,
        block_cache_bytes: int,
        seen_ttl_s: int,
    ) -> None:
        self.folder = folder
        self.write_buffer_bytes = write_buffer_bytes
        self.block_cache_bytes = block_cache_bytes
        self.seen_ttl_s = seen_ttl_s
        self.partitions: dict[int, list[TableStore]] = {}
        self.views = [TableView(name) for name in TABLES]

    def open(self, partition: int) -> list[TableStore]:
        stores = self.partitions.get(partition)
        if stores is None:
            stores = self.partitions[partition] = [
                TableStore(
                    self.folder / f"{name}-{partition}.db",
                    self.write_buffer_bytes,
                    self.block_cache_bytes,
                    self.seen_ttl_s if index == SEEN else None,
                )
                for index, name in enumerate(TABLES)
            ]
        return stores

    def close(self, partition: int) -> None:
        for store in self.partitions.pop(partition, []):
            store.close()
        for view in self.views:
            if view.store is not None and view.store not in self.stores():
                view.store = None

    def stores(self) -> list[TableStore]:
        return [store for stores in self.partitions.values() for store in stores]

    def use(self, partition: int) -> None:
        """The engine's reads and writes go to this lane partition's databases."""
        for view, store in zip(self.views, self.partitions[partition], strict=True):
            view.store = store

    def persist(self, offsets: dict[tuple[int, int], int]) -> None:
        """Persist every partition's batch writes with the changelog offsets ``(table, partition)``
        acknowledged for them."""
        for partition, stores in self.partitions.items():
            for index, store in enumerate(stores):
                store.persist(offsets.get((index, partition)))

    def discard(self) -> None:
        for store in self.stores():
            store.discard()

    def close_all(self) -> None:
        for partition in list(self.partitions):
            self.close(partition)
