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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer

from bench.pipeline import thread_cpu
from inflow.config.settings import KafkaSettings
from inflow.config.topics import create_topics, load_catalogue
from inflow.kafka.clients import new_admin, new_consumer, new_producer
from inflow.kafka.producer import CLIENT_MAX_BYTES, RECORD_OVERHEAD
from inflow.processors.lanes import owned_in_log, second_string
from inflow.processors.reading import IngestReader
from inflow.producers.bulk_api.context import RequestContext
from inflow.producers.bulk_api.elements import ElementValidator, Encoders
from inflow.producers.bulk_api.messages import BULK
from inflow.producers.bulk_api.settings import GatewaySettings
from inflow.schemas.packs import PackEncoder, pack_messages, unpack
from inflow.schemas.serde import AvroSerde

BASE_MS = 1_750_000_000_000


USERS_PER_REQUEST = 20
ACTIONS_PER_USER = 18  # one event element of 18 actions per user and request, as the end-to-end bench sends
Messages = list[tuple[bytes, bytes]]


def gateway_messages(
    workspace: str, identifiers: tuple[str, ...], requests: list[list[dict[str, Any]]]
) -> Messages:
    """What the gateway writes to ingest.records for these Bulk requests: its element validator and
    encoders, then its packing (each request's records of one user in one message)."""
    serde = AvroSerde()
    validator = ElementValidator(GatewaySettings(), Encoders.spliced(serde, lambda short: short))
    packs = PackEncoder(serde)
    out: Messages = []
    for n, elements in enumerate(requests):
        ctx = RequestContext(workspace, f"bench{n}", datetime.now(UTC), "127.0.0.1")
        messages = [
            (m.topic, m.key, m.value)
            for element in elements
            for m in validator.element(element, ctx, identifiers, BULK).messages
        ]
        limit = lambda topic: CLIENT_MAX_BYTES - RECORD_OVERHEAD  # noqa: E731 - the default topic limit
        out += [(key, value) for _, key, value in pack_messages(messages, packs, limit, "ingest.records")]
    return out


def records(
    workspaces: int, users: int, events: int, identifiers: tuple[str, ...]
) -> tuple[Messages, Messages, Messages]:
    """The gateway's messages for: a customer element per user, a device element per user, then event
    elements (requests of 20 users x 18 actions, users round-robin), for one workspace per ``bench<i>``."""
    out: tuple[Messages, Messages, Messages] = ([], [], [])
    for w in range(workspaces):
        ws = f"bench{w}"
        ids = [i for i in range(users) if i % workspaces == w]
        customers = [
            {
                "type": "customer",
                "customer_id": f"user-{i}",
                "attributes": {
                    "name": f"User {i}",
                    "email": f"u{i}@x.io",
                    "moe_mobile": f"+47{i}",
                    "tier": "gold",
                },
            }
            for i in ids
        ]
        devices = [
            {
                "type": "device",
                "customer_id": f"user-{i}",
                "device_id": f"user-{i}",
                "attributes": {"platform": "ANDROID", "push_id": f"tok-{i}", "model": "Pixel"},
            }
            for i in ids
        ]
        per = USERS_PER_REQUEST
        out[0].extend(
            gateway_messages(ws, identifiers, [customers[k : k + per] for k in range(0, len(ids), per)])
        )
        out[1].extend(
            gateway_messages(ws, identifiers, [devices[k : k + per] for k in range(0, len(ids), per)])
        )
        share = events // workspaces + (1 if w < events % workspaces else 0)
        requests: list[list[dict[str, Any]]] = []
        n = 0
        while n < share:
            elements = []
            for _ in range(per):
                if n >= share:
                    break
                count = min(ACTIONS_PER_USER, share - n)
                actions = [
                    {"action": "Purchase", "attributes": {"amount": 12.5}, "current_time": BASE_MS + n + a}
                    for a in range(count)
                ]
                user = ids[(len(requests) * per + len(elements)) % len(ids)]
                elements.append({"type": "event", "customer_id": f"user-{user}", "actions": actions})
                n += count
            requests.append(elements)
        out[2].extend(gateway_messages(ws, identifiers, requests))
    return out


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
    kafka: KafkaSettings,
    count: int,
    data: tuple[Messages, Messages, Messages],
    expected: tuple[int, int],
    workspaces: int,
    timeout: float,
    identifiers: list[str],
    py_spy: str | None = None,
    cprofile: str | None = None,
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
        if cprofile and n == 0:  # the whole run of the first worker under cProfile (written on SIGTERM)
            argv[1:1] = ["-m", "cProfile", "-o", cprofile]
        procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
    ingest = next(spec for spec in load_catalogue(kafka.topic_prefix) if spec.short_name == "ingest.records")
    wait_for_lanes(home, count, ingest.entry.partitions, timeout)
    profiles = new_consumer(kafka, f"bench-profiles-{uuid.uuid4().hex}")
    profiles.subscribe([kafka.topic("profiles")])
    # Users first, then their devices, so every device finds its user; then the measured events.
    users, devices, events = data
    produce(kafka, kafka.topic("ingest.records"), users)
    wait_for_records(profiles, expected[0], timeout)
    produce(kafka, kafka.topic("ingest.records"), devices)
    wait_for_records(profiles, expected[0], timeout)
    profiles.close()
    cpu_before = sum(cpu_seconds(p.pid) for p in procs)
    threads_before = thread_cpu(procs[0].pid)
    spy = None
    if py_spy:  # raw (collapsed) stacks of the whole events phase, sampled at 200 Hz
        argv = [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(procs[0].pid)]
        argv += ["--format", "raw", "--rate", "200", "--gil", "--output", py_spy, "--nonblocking"]
        spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    produce(kafka, kafka.topic("ingest.records"), events)
    try:
        got, total, seconds = span_of_outputs(kafka, kafka.topic("events"), expected[1], timeout)
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            spy.wait(60)
        if total > got:
            print(f"  ({total - got:,} events published twice: a partition was re-read after a rebalance)")
        threads = thread_cpu(procs[0].pid)
        spent = {name: cpu - threads_before.get(name, 0.0) for name, cpu in threads.items()}
        busy = sorted(((cpu, name) for name, cpu in spent.items() if cpu >= 0.05), reverse=True)
        print("  worker w0's CPU by thread: " + ", ".join(f"{name} {cpu:.2f}s" for cpu, name in busy))
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
    data: tuple[Messages, Messages, Messages], expected: int, identifiers: list[str], workspaces: int
) -> float:
    """The identity logic with Avro decode/encode over in-memory state, no Kafka: one process's ceiling."""
    from inflow.config.file import WorkspaceConfig
    from inflow.processors.engine import LaneProcessor, enriched_events
    from inflow.processors.state import State
    from inflow.processors.workspaces import IdentityRulesDirectory

    serde, state = AvroSerde(), State.in_memory()
    reader = IngestReader(serde)  # as the worker reads ingest records
    spaces = [WorkspaceConfig(id=f"bench{i}", identifiers=identifiers) for i in range(workspaces)]
    processor = LaneProcessor(
        state, IdentityRulesDirectory(spaces), enriched_events=enriched_events(serde, "events")
    )
    users, devices, events = data
    for _, value in users + devices:
        for item in unpack(serde, value):
            processor.process(*reader.decode(item))
            state.flush()
    started = time.perf_counter()
    for offset, (_, value) in enumerate(events):
        processor.run = None
        for index, item in enumerate(unpack(serde, value)):  # as the lane applies a pack
            name, record = reader.decode(item)
            position = [0, offset, index]
            outputs = processor.next_event(record, position) if name == "EventRecord" else None
            if outputs is None:
                outputs = processor.process(name, record, position)
            for output in outputs:
                if output.encoded is None:
                    serde.encode(output.record_name, output.record)
            state.stage()
        state.flush()
    return expected / (time.perf_counter() - started)


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the finally blocks: stop the workers
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--workspaces", type=int, default=1)
    parser.add_argument("--identifiers", type=int, choices=(1, 3), default=1)
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts to measure")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument(
        "--py-spy", help="record the 1-worker run's events phase with py-spy (in the venv) into this file"
    )
    parser.add_argument(
        "--cprofile", help="run the first worker of the 1-worker run under cProfile, its stats into this file"
    )
    args = parser.parse_args()
    base = KafkaSettings()
    run = uuid.uuid4().hex[:8]
    print(f"building {args.users} users (+1 device each), {args.events} events, {args.workspaces} workspaces")
    identifiers = ["customer_id", "email", "moe_mobile"][: args.identifiers]
    data = records(args.workspaces, args.users, args.events, tuple(identifiers))
    events = data[2]
    print(
        f"as the gateway writes them: {len(data[0]):,} user, {len(data[1]):,} device and "
        f"{len(events):,} event "
        f"messages ({args.events / len(events):.1f} events per message)"
    )
    print(f"identifiers active: {', '.join(identifiers)}; {os.cpu_count()} cores")
    ceiling = engine_only(data, args.events, identifiers, args.workspaces)
    print(f"identity logic + Avro only (no Kafka, in-memory state): {ceiling:10,.0f} events/s")
    kafka = base.model_copy(update={"topic_prefix": f"bench{run}copy"})
    create_topics(new_admin(kafka), load_catalogue(kafka.topic_prefix))
    produce(kafka, kafka.topic("ingest.records"), events)
    cpu_before = os.times()
    copy_rate = baseline_copy(kafka, kafka.topic("ingest.records"), kafka.topic("events"), len(events))
    cpu = sum(os.times()[:2]) - sum(cpu_before[:2])
    copy_events = copy_rate * args.events / len(events)  # the events those messages carry, per second
    print(
        f"baseline  bare confluent-kafka copy of ingest.records: {copy_rate:10,.0f} messages/s "
        f"({copy_events:,.0f} events/s), {len(events) / cpu:,.0f} messages per CPU-second (this process)"
    )

    results = {}
    for count in (int(c) for c in args.workers.split(",")):
        kafka = base.model_copy(update={"topic_prefix": f"bench{run}w{count}"})
        got, seconds, cpu = run_workers(
            kafka,
            count,
            data,
            (args.users, args.events),
            args.workspaces,
            args.timeout,
            identifiers,
            args.py_spy if count == 1 else None,
            args.cprofile if count == 1 else None,
        )
        rate = got / seconds if seconds else 0.0
        results[count] = rate
        print(
            f"processors {count} worker(s): {got:,} events in {seconds:.1f}s = {rate:10,.0f} events/s "
            f"({rate / count:,.0f} per worker), ratio to baseline {rate / copy_events:.3f}; "
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
