"""Settings of one processors worker (environment ``INFLOW_WORKER_*``), tuned for throughput.

faust-streaming's defaults favour latency and safety margins over throughput; the values here were
measured with ``bench/processors_bench.py`` (see the processors section of docs/BENCHMARKS.md).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    """One Faust worker process; several with the same topic prefix form one consumer group."""

    model_config = SettingsConfigDict(env_prefix="INFLOW_WORKER_", extra="forbid")

    name: str = Field("worker", description="names the local RocksDB folder; unique per process on a host")
    data_dir: Path | None = Field(None, description="RocksDB folder; default <INFLOW_HOME>/processors/<name>")
    log_level: str = "warn"
    max_poll_records: int = Field(
        500, gt=0, description="lane messages (packs of records) per fetch (faust default: unlimited)"
    )
    stream_buffer_maxsize: int = Field(
        16,
        gt=0,
        description="lane packs buffered per partition before its fetch pauses; bounds memory (default 4096)",
    )
    linger_ms: int = Field(20, ge=0, description="producer linger; batches outputs and changelog writes")
    max_batch_size: int = Field(1_048_576, gt=0, description="producer batch bytes (default 16 KiB)")
    commit_interval_s: float = Field(1.0, gt=0, description="offset commit period (default 2.8 s)")
    producer_buffer_messages: int = Field(
        20_000, gt=0, description="faust send buffer before it stalls (100)"
    )
    session_timeout_s: float = Field(
        10.0, gt=0, description="a dead worker's lanes move after this (default 60 s)"
    )
    max_fetch_bytes: int = Field(8_388_608, gt=0, description="bytes per partition and fetch (default 1 MiB)")
    batch_size: int = Field(
        10_000, gt=0, description="ingest records per router batch (and per pack at most)"
    )
    lane_batch_packs: int = Field(32, gt=0, description="lane messages (packs) per lane batch (take_events)")
    batch_within_s: float = Field(0.05, gt=0, description="a partial batch is processed after this")
    flush_timeout_s: float = Field(60.0, gt=0, description="a batch not delivered in this time fails")
    cache_limit: int = Field(
        20_000, gt=0, description="decoded state values cached per table (seen marks: 1/10 of it)"
    )
    lane_stall_s: float = Field(
        30.0, gt=0, description="an owned lane with records waiting and none delivered this long is re-read"
    )
    progress_log_s: float = Field(
        30.0, gt=0, description="period of the INFO progress line (routed, applied)"
    )
    dedup_window_s: int = Field(
        7 * 86_400,
        gt=0,
        description="event_uuid de-duplication window: seen marks expire after it (ingest keeps 7 days)",
    )
    rocksdb_write_buffer_bytes: int = Field(
        8_388_608, gt=0, description="RocksDB memtable per table and lane partition (faust: 64 MiB x 3)"
    )
    rocksdb_block_cache_bytes: int = Field(
        8_388_608, gt=0, description="RocksDB block cache per table and lane partition (faust: 2 GiB)"
    )
