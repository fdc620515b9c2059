"""Seen-mark lookups in the worker's RocksDB tables, with and without the memtable's whole-key filter.

    .venv/bin/python -m bench.rocksdb_lookup_bench [--marks 300000] [--probes 200000]

Writes ``--marks`` seen-mark keys (as the worker writes them: workspace, slot, event uuid) in write batches
into a database opened with the worker's options (``processors/store.py``: 8 MB memtables, bloom filters in
the table files, TTL), then looks up ``--probes`` keys that are not there (every new event's lookup) and as
many that are. The baseline is the same database without the memtable filter, in the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from inflow.processors.store import TableStore


def measure(folder: Path, marks: int, probes: int, memtable_filter: bool) -> tuple[float, float]:
    store = TableStore(folder / f"seen-{memtable_filter}", 8 << 20, 8 << 20, 86_400, memtable_filter)
    keys = [b"W\x00slot-%d\x00%s" % (i % 10_000, uuid.uuid4().hex.encode()) for i in range(marks)]
    for start in range(0, marks, 20_000):
        store.stage([(key, b"[1,2,3]") for key in keys[start : start + 20_000]])
        store.persist(None)
    get = store.get
    missing = [b"W\x00slot-%d\x00%s" % (i % 10_000, uuid.uuid4().hex.encode()) for i in range(probes)]
    began = time.process_time()
    for key in missing:
        get(key)
    miss = (time.process_time() - began) / probes * 1e6
    began = time.process_time()
    for key in keys[:probes]:
        get(key)
    hit = (time.process_time() - began) / min(probes, marks) * 1e6
    store.close()
    return miss, hit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--marks", type=int, default=300_000)
    parser.add_argument("--probes", type=int, default=200_000)
    args = parser.parse_args()
    for marks in (args.marks, args.marks * 4):  # mostly in the memtables, then mostly in table files
        for _ in range(2):
            with tempfile.TemporaryDirectory(prefix="inflow-rocks-bench-") as tmp:
                base_miss, base_hit = measure(Path(tmp), marks, args.probes, memtable_filter=False)
                miss, hit = measure(Path(tmp), marks, args.probes, memtable_filter=True)
            print(
                f"{marks:,} marks: a lookup that misses {miss:.2f} µs (without the memtable filter "
                f"{base_miss:.2f} µs, ratio {miss / base_miss:.2f}); "
                f"one that hits {hit:.2f} µs ({base_hit:.2f})"
            )


if __name__ == "__main__":
    main()
