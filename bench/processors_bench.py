"""Benchmark of the processors: enriched events per second per worker, beside a bare copy baseline.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 .venv/bin/python -m bench.processors_bench \
        [--events 200000] [--identifiers 1|3] [--workers 1,2,4]

What runs, on the same broker in the same run, for ONE workspace (the usual self-hosted case: its users
are spread over every partition of ingest.records and every worker):
1. baseline: a bare confluent-kafka consumer -> producer copy of the same ingest.records topic (bytes in,
   bytes out, no decoding), one process;
2. the processors with 1 worker process, then 2, then 4, each on its own topic prefix holding the same
   data: users first (identity index and profiles warm; with ``--identifiers 3`` the workspace resolves
   customer_id, email and moe_mobile, so every user's e-mail and mobile are claimed on their own
   partitions), then the events, every event resolved through the identity index, de-duplicated, enriched
   with the user's profile and device, and published.
Throughput is counted from the broker timestamps of the first and last output record, so worker start
and rebalance time are excluded. Figures are printed as events/s and as a ratio to the baseline.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml
from confluent_kafka import Consumer

from inflow.config.settings import KafkaSettings
from inflow.config.topics import create_topics, load_catalogue
from inflow.kafka.clients import new_admin, new_consumer, new_producer
from inflow.processors.lanes import owned_in_log, second_string
from inflow.schemas.serde import AvroSerde

BASE_MS = 1_750_000_000_000


def records(
    workspaces: int, users: int, events: int
) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """Encoded (key, value) users (with one device each) and events spread over workspaces and users."""
    serde = AvroSerde()
    user_records, event_records = [], []

    def envelope(ws: str, cid: str) -> dict[str, object]:
        return {
            "event_uuid": uuid.uuid4().hex,
            "workspace_id": ws,
            "request_id": "bench",
            "received_at": BASE_MS,
            "source": "api",
            "customer_id": cid,
        }

    for i in range(users):
        ws, cid = f"bench{i % workspaces}", f"user-{i}"
        user = envelope(ws, cid) | {
            "attributes_json": (
                f'{{"name":"User {i}","email":"u{i}@x.io","moe_mobile":"+47{i}","tier":"gold"}}'
            )
        }
        user_records.append((f"{ws}:{cid}".encode(), serde.encode("UserUpsert", user)))
        device = envelope(ws, cid) | {
            "device_id": cid,
            "attributes_json": f'{{"platform":"ANDROID","push_id":"tok-{i}","model":"Pixel"}}',
        }
        user_records.append((f"{ws}:{cid}".encode(), serde.encode("DeviceUpsert", device)))
    for n in range(events):
        i = n % users
        ws, cid = f"bench{i % workspaces}", f"user-{i}"
        event = envelope(ws, cid) | {
            "action": "Purchase",
            "attributes_json": '{"amount":12.5}',
            "user_time": BASE_MS + n,
        }
        event_records.append((f"{ws}:{cid}".encode(), serde.encode("EventRecord", event)))
    return user_records, event_records


def produce(kafka: KafkaSettings, topic: str, data: list[tuple[bytes, bytes]]) -> None:
    producer = new_producer(kafka)
    for key, value in data:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(120) == 0


def span_of_outputs(
    kafka: KafkaSettings, topic: str, expected: int, timeout: float
) -> tuple[int, int, float]:
    """Read ``topic`` until ``expected`` distinct events arrived: (distinct, total, seconds from the first
    to the last broker timestamp). Totals above distinct are events published twice (a lane re-read)."""
    consumer = new_consumer(kafka, f"bench-read-{uuid.uuid4().hex}", **{"fetch.max.bytes": 52428800})
    consumer.subscribe([topic])
    first, last, total, seen = None, 0, 0, set()
    deadline = time.monotonic() + timeout
    while len(seen) < expected and time.monotonic() < deadline:
        for msg in consumer.consume(10000, 0.5):
            if msg.error():
                continue
            ts = msg.timestamp()[1]
            first = ts if first is None else min(first, ts)
            last = max(last, ts)
            total += 1
            seen.add(second_string(msg.value()))
    consumer.close()
    return len(seen), total, (last - (first or last)) / 1000.0


def wait_for_lanes(home: Path, count: int, partitions: int, timeout: float) -> None:
    """Until the workers' last logged lane ownerships cover every lane partition once (no rebalance left
    to happen in the measured phase)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        owned = [owned_in_log((home / f"w{n}.log").read_text()) for n in range(count)]
        if all(owned) and sorted(p for o in owned for p in o) == list(range(partitions)):
            return
        time.sleep(0.5)
    raise SystemExit(f"the {count} workers did not settle on the lane partitions within {timeout:.0f}s")


def wait_for_records(consumer: Consumer, count: int, timeout: float) -> None:
    """Read ``count`` records (the profile snapshots of a phase) before the next phase starts."""
    got, deadline = 0, time.monotonic() + timeout
    while got < count:
        if time.monotonic() > deadline:
            raise SystemExit(
                f"only {got} of {count} profile snapshots after {timeout:.0f}s; see the worker logs"
            )
        got += sum(1 for m in consumer.consume(10000, 0.5) if not m.error())


def baseline_copy(kafka: KafkaSettings, source: str, target: str, expected: int) -> float:
    """Bare consumer -> producer copy; returns records per second (first record read to last delivered)."""
    consumer = new_consumer(kafka, f"bench-copy-{uuid.uuid4().hex}", **{"fetch.max.bytes": 52428800})
    consumer.subscribe([source])
    producer = new_producer(kafka)
    copied, started = 0, None
    while copied < expected:
        batch = consumer.consume(10000, 1.0)
        if batch and started is None:
            started = time.monotonic()
        for msg in batch:
            if msg.error():
                continue
            while True:
                try:
                    producer.produce(target, key=msg.key(), value=msg.value())
                    break
                except BufferError:
                    producer.poll(0.05)
            copied += 1
        producer.poll(0)
        consumer.commit(asynchronous=True)
    producer.flush(60)
    consumer.close()
    return copied / (time.monotonic() - (started or time.monotonic()))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to report events per CPU-second."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_workers(
    kafka: KafkaSettings, count: int, users, events, workspaces: int, timeout: float, identifiers: list[str]
) -> tuple[int, float, float]:
    """Start ``count`` workers on a fresh prefix holding the data; events/s of the enriched output."""
    admin = new_admin(kafka)
    create_topics(admin, load_catalogue(kafka.topic_prefix))
    home = Path(tempfile.mkdtemp(prefix="inflow-bench-"))
    config = home / "inflow.yaml"
    spaces = [{"id": f"bench{i}", "identifiers": identifiers} for i in range(workspaces)]
    config.write_text(yaml.safe_dump({"workspaces": spaces}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "INFLOW_"))}
    env |= {
        "KAFKA_BOOTSTRAP_SERVERS": str(kafka.bootstrap_servers),
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "INFLOW_HOME": str(home),
        "INFLOW_CONFIG": str(config),
    }
    procs = []
    for n in range(count):
        log = (home / f"w{n}.log").open("wb")
        argv = [sys.executable, "-m", "inflow.cli", "worker", "--name", f"w{n}"]
        procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
    ingest = next(spec for spec in load_catalogue(kafka.topic_prefix) if spec.short_name == "ingest.records")
    wait_for_lanes(home, count, ingest.entry.partitions, timeout)
    profiles = new_consumer(kafka, f"bench-profiles-{uuid.uuid4().hex}")
    profiles.subscribe([kafka.topic("profiles")])
    # Users first, then their devices, so every device finds its user; then the measured events.
    produce(kafka, kafka.topic("ingest.records"), users[0::2])
    wait_for_records(profiles, len(users) // 2, timeout)
    produce(kafka, kafka.topic("ingest.records"), users[1::2])
    wait_for_records(profiles, len(users) // 2, timeout)
    profiles.close()
    cpu_before = sum(cpu_seconds(p.pid) for p in procs)
    produce(kafka, kafka.topic("ingest.records"), events)
    try:
        got, total, seconds = span_of_outputs(kafka, kafka.topic("events"), len(events), timeout)
        if total > got:
            print(f"  ({total - got:,} events published twice: a partition was re-read after a rebalance)")
        return got, seconds, sum(cpu_seconds(p.pid) for p in procs) - cpu_before
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)


def drop_topics(kafka: KafkaSettings, prefix: str) -> None:
    """Delete every topic this run created (catalogue and state changelogs) so runs do not pile up."""
    admin = new_admin(kafka)
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    for future in admin.delete_topics(names, operation_timeout=60).values() if names else []:
        future.exception()


def engine_only(
    users: list[tuple[bytes, bytes]],
    events: list[tuple[bytes, bytes]],
    identifiers: list[str],
    workspaces: int,
) -> float:
    """The identity logic with Avro decode/encode over in-memory state, no Kafka: one process's ceiling."""
    from inflow.config.file import WorkspaceConfig
    from inflow.processors.engine import LaneProcessor
    from inflow.processors.state import State
    from inflow.processors.workspaces import IdentityRulesDirectory

    serde, state = AvroSerde(), State.in_memory()
    spaces = [WorkspaceConfig(id=f"bench{i}", identifiers=identifiers) for i in range(workspaces)]
    processor = LaneProcessor(state, IdentityRulesDirectory(spaces))
    for _, value in users:
        processor.process(*serde.decode(value))
        state.flush()
    started = time.perf_counter()
    for _, value in events:
        for output in processor.process(*serde.decode(value)):
            serde.encode(output.record_name, output.record)
        state.flush()
    return len(events) / (time.perf_counter() - started)


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the finally blocks: stop the workers
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--workspaces", type=int, default=1)
    parser.add_argument("--identifiers", type=int, choices=(1, 3), default=1)
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts to measure")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    base = KafkaSettings()
    run = uuid.uuid4().hex[:8]
    print(f"building {args.users} users (+1 device each), {args.events} events, {args.workspaces} workspaces")
    users, events = records(args.workspaces, args.users, args.events)
    identifiers = ["customer_id", "email", "moe_mobile"][: args.identifiers]
    print(f"identifiers active: {', '.join(identifiers)}; {os.cpu_count()} cores")
    ceiling = engine_only(users, events, identifiers, args.workspaces)
    print(f"identity logic + Avro only (no Kafka, in-memory state): {ceiling:10,.0f} events/s")
    kafka = base.model_copy(update={"topic_prefix": f"bench{run}copy"})
    create_topics(new_admin(kafka), load_catalogue(kafka.topic_prefix))
    produce(kafka, kafka.topic("ingest.records"), events)
    cpu_before = os.times()
    copy_rate = baseline_copy(kafka, kafka.topic("ingest.records"), kafka.topic("events"), len(events))
    cpu = sum(os.times()[:2]) - sum(cpu_before[:2])
    print(
        f"baseline  bare confluent-kafka copy of ingest.records: {copy_rate:10,.0f} records/s, "
        f"{len(events) / cpu:,.0f} per CPU-second (this process)"
    )

    results = {}
    for count in (int(c) for c in args.workers.split(",")):
        kafka = base.model_copy(update={"topic_prefix": f"bench{run}w{count}"})
        got, seconds, cpu = run_workers(
            kafka, count, users, events, args.workspaces, args.timeout, identifiers
        )
        rate = got / seconds if seconds else 0.0
        results[count] = rate
        print(
            f"processors {count} worker(s): {got:,} events in {seconds:.1f}s = {rate:10,.0f} events/s "
            f"({rate / count:,.0f} per worker), ratio to baseline {rate / copy_rate:.3f}; "
            f"{got / cpu if cpu else 0:,.0f} events per worker CPU-second"
        )
    drop_topics(base, f"bench{run}")
    for count in sorted(results)[1:]:
        if results.get(1):
            print(
                f"scaling 1 -> {count} workers: x{results[count] / results[1]:.2f} "
                f"(on {os.cpu_count()} cores)"
            )


if __name__ == "__main__":
    main()
