"""Settings of one processors worker (environment ``INFLOW_WORKER_*``), tuned for throughput.

The values were measured with ``bench/processors_bench.py`` (see the processors section of
docs/BENCHMARKS.md).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    """One worker process; several with the same topic prefix share the ingest partitions and the lanes."""

    model_config = SettingsConfigDict(env_prefix="INFLOW_WORKER_", extra="forbid")

    name: str = Field("worker", description="names the local RocksDB folder; unique per process on a host")
    data_dir: Path | None = Field(None, description="RocksDB folder; default <INFLOW_HOME>/processors/<name>")
    log_level: str = "warn"
    linger_ms: int = Field(20, ge=0, description="producer linger; batches outputs and changelog writes")
    max_batch_size: int = Field(1_048_576, gt=0, description="producer batch bytes (librdkafka: 1 MB)")
    session_timeout_s: float = Field(
        10.0, gt=0, description="a dead worker's lanes and ingest partitions move after this"
    )
    max_fetch_bytes: int = Field(8_388_608, gt=0, description="lane bytes per partition and fetch")
    lane_batch_packs: int = Field(5_000, gt=0, description="ingest.records messages per batch")
    batch_within_s: float = Field(0.05, gt=0, description="a partial batch is processed after this")
    flush_timeout_s: float = Field(
        60.0, gt=0, description="a batch still unacknowledged after this is reported (and waited for)"
    )
    cache_limit: int = Field(
        20_000, gt=0, description="decoded state values cached per table (seen marks: 1/10 of it)"
    )
    progress_log_s: float = Field(
        30.0, gt=0, description="period of the INFO progress line (applied per partition)"
    )
    dedup_window_s: int = Field(
        7 * 86_400,
        gt=0,
        description="event_uuid de-duplication window: seen marks expire after it (ingest keeps 7 days)",
    )
    max_profile_bytes: int = Field(
        262_144, gt=1024, description="a user update that would make the profile larger is rejected"
    )
    max_profile_attributes: int = Field(
        2_000, gt=0, description="a user update that would give the profile more attributes is rejected"
    )
    backfill_batch: int = Field(
        500, gt=0, description="profiles an identifier backfill scans per step and partition, between batches"
    )
    backfill_step_interval_s: float = Field(
        0.0, ge=0, description="pause between two backfill steps of one partition (0: every lane loop)"
    )
    fair_usage: bool = Field(
        True, description="enforce the per-user Fair Usage Policy (each workspace's fair_usage settings)"
    )
    fair_usage_tracked_users: int = Field(
        100_000, gt=0, description="users whose Fair Usage counts are kept; the least recently seen go first"
    )
    gc_full_every_s: float = Field(
        60.0, gt=0, description="a full cyclic garbage collection between batches this often (see collection)"
    )
    rocksdb_write_buffer_bytes: int = Field(
        8_388_608, gt=0, description="RocksDB memtable per table and lane partition (two at most)"
    )
    rocksdb_block_cache_bytes: int = Field(
        8_388_608, gt=0, description="RocksDB block cache per table and lane partition"
    )
