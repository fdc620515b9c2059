"""Gateway throughput and latency against a raw confluent-kafka producer of the same Avro bytes.

    .venv/bin/python -m bench.gateway_bench [--seconds 20] [--concurrency 8] [--write docs/bench-gateway.md]
    .venv/bin/python -m bench.gateway_bench --shape e2e --seconds 10 [--profile 8]   # e2e_bench's requests

One ``inflow gateway`` process on loopback, bulk requests of about 100 KB, sent by an aiohttp load
generator in this process. ``--shape mix`` (default): 1 in 5 elements a customer, the rest events of 1 to
3 actions; ``--shape e2e``: ``bench/e2e_bench.py``'s requests, 20 users x (1 customer + 1 event element of
18 actions). Figures:

* max accepted events/s (actions) and records/s with ``--concurrency`` requests in flight;
* p50/p99 request latency at half of that rate (open loop, fixed request rate);
* the gateway's CPU per accepted event (µs, ``/proc``) in both phases: the figure least sensitive to the
  machine's load;
* the raw baseline: one confluent-kafka producer (same settings: acks=all, idempotence, lz4) sending the
  very bytes the gateway would produce for the same requests (packed per user, as the gateway sends them),
  acked, to the same broker in the same run.

``--profile S`` records the gateway with py-spy (``--gil``; if installed, it is not a dependency) for the
first S seconds of the peak phase and prints where its time goes.

The broker is ``KAFKA_BOOTSTRAP_SERVERS`` (default 127.0.0.1:9092); topics get a fresh prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from bench.e2e_bench import Bodies, drop_topics, start_py_spy, summarize_py_spy
from bench.pipeline import thread_cpu
from inflow.config.settings import KafkaSettings
from inflow.config.topics import create_topics, load_catalogue
from inflow.kafka.clients import new_admin, new_producer
from inflow.local.process import free_port
from inflow.producers.bulk_api.context import RequestContext
from inflow.producers.bulk_api.elements import ElementValidator, Encoders
from inflow.producers.bulk_api.messages import BULK
from inflow.producers.bulk_api.settings import GatewaySettings
from inflow.schemas.packs import PackEncoder, pack_messages
from inflow.schemas.serde import AvroSerde

WS, KEY = "BENCH", "bench-data-api-key"
TARGET_BYTES = 100 * 1024 - 512


def element(rng: random.Random, n: int) -> dict:
    """A realistic mix: 1 in 5 elements is a customer update, the rest events of 1 to 3 actions."""
    cid = f"user-{rng.randrange(100_000)}@example.com"
    if n % 5 == 0:
        return {
            "type": "customer",
            "customer_id": cid,
            "attributes": {
                "name": "Jane Doe",
                "first_name": "Jane",
                "email": cid,
                "plan": rng.choice(["free", "pro", "team"]),
                "ltv": round(rng.random() * 1000, 2),
                "platforms": [{"platform": "ANDROID", "active": "true"}],
            },
        }
    now = int(time.time()) - rng.randrange(86_400)
    actions = [
        {
            "action": rng.choice(["ProductViewed", "AddedToCart", "Purchased", "AppOpened"]),
            "attributes": {
                "product_id": f"sku-{rng.randrange(10_000)}",
                "price": rng.randrange(100, 99_999) / 100,
                "currency": "USD",
                "category": "Accessories",
            },
            "platform": "ANDROID",
            "app_version": "4.2.1",
            "current_time": now,
            "user_timezone_offset": 19800,
        }
        for _ in range(rng.randint(1, 3))
    ]
    return {
        "type": "event",
        "customer_id": cid,
        "device_id": f"dev-{rng.randrange(100_000)}",
        "actions": actions,
    }


def payload(seed: int) -> tuple[bytes, int, int]:
    """A bulk body just under 100 KB; returns (body, records, event actions)."""
    rng = random.Random(seed)
    elements: list[dict] = []
    size = 40
    while True:
        el = element(rng, len(elements))
        grown = size + len(json.dumps(el)) + 2
        if grown > TARGET_BYTES:
            break
        elements.append(el)
        size = grown
    body = json.dumps({"type": "transition", "elements": elements}).encode()
    events = sum(len(e.get("actions", [])) for e in elements)
    records = events + sum(1 for e in elements if e["type"] == "customer")
    return body, records, events


def e2e_payloads(count: int) -> list[tuple[bytes, int, int]]:
    """``bench/e2e_bench.py``'s request bodies: 20 users x (1 customer + 18 events), about 100 KB."""
    bodies = Bodies(users=20_000, now=int(time.time()) - 60)
    out = []
    for n in range(count):
        body = bodies.body(n)
        doc = json.loads(body)
        events = sum(len(e.get("actions", [])) for e in doc["elements"])
        records = events + sum(1 for e in doc["elements"] if e["type"] == "customer")
        out.append((body, records, events))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to report throughput per gateway core."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_gateway(kafka: KafkaSettings, home: Path) -> tuple[subprocess.Popen[bytes], str]:
    config = home / "inflow.yaml"
    config.write_text(
        f"workspaces:\n  - id: {WS}\n    api_key: {KEY}\n"
        "    rate_limits: {users_per_minute: 1000000000, events_per_minute: 1000000000}\n"
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "INFLOW_"))}
    env |= {
        "KAFKA_BOOTSTRAP_SERVERS": str(kafka.bootstrap_servers),
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "INFLOW_HOME": str(home),
        "INFLOW_CONFIG": str(config),
    }
    log = (home / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "inflow.cli", "gateway", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return proc, f"http://127.0.0.1:{port}"


async def wait_healthy(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url + "/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.25)
    raise RuntimeError("gateway did not become healthy")


HEADERS = {
    "Authorization": "Basic " + base64.b64encode(f"{WS}:{KEY}".encode()).decode(),
    "Content-Type": "application/json",
}


async def closed_loop(
    url: str, bodies: list[tuple[bytes, int, int]], seconds: float, concurrency: int
) -> dict:
    """``concurrency`` clients sending back to back; accepted records and events per second."""
    done = {"requests": 0, "records": 0, "events": 0, "errors": 0}
    stop_at = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=HEADERS) as session:

        async def client(i: int) -> None:
            n = i
            while time.monotonic() < stop_at:
                body, records, events = bodies[n % len(bodies)]
                n += concurrency
                async with session.post(f"{url}/v1/transition/{WS}", data=body) as resp:
                    await resp.read()
                    if resp.status == 200:
                        done["requests"] += 1
                        done["records"] += records
                        done["events"] += events
                    else:
                        done["errors"] += 1

        started = time.monotonic()
        await asyncio.gather(*(client(i) for i in range(concurrency)))
        elapsed = time.monotonic() - started
    return {k: v / elapsed for k, v in done.items()} | {"seconds": elapsed}


async def open_loop(url: str, bodies: list[tuple[bytes, int, int]], rate: float, seconds: float) -> dict:
    """Requests at a fixed rate regardless of answers; latency percentiles of the 200s."""
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256), headers=HEADERS) as session:

        async def one(body: bytes) -> None:
            nonlocal errors
            t0 = time.perf_counter()
            async with session.post(f"{url}/v1/transition/{WS}", data=body) as resp:
                await resp.read()
                if resp.status == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        tasks = []
        start = time.perf_counter()
        total = int(rate * seconds)
        for n in range(total):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(bodies[n % len(bodies)][0])))
        await asyncio.gather(*tasks)
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    return {"p50_ms": pick(0.50), "p99_ms": pick(0.99), "requests": len(latencies), "errors": errors}


def raw_baseline(kafka: KafkaSettings, bodies: list[tuple[bytes, int, int]], seconds: float) -> dict:
    """The same Avro bytes the gateway would produce, sent by a bare producer and acknowledged."""
    serde = AvroSerde()
    topic = kafka.topic
    validator = ElementValidator(GatewaySettings(), Encoders.spliced(serde, topic))
    packs = PackEncoder(serde, topic("ingest.records"))
    messages = []
    for i, (body, _, _) in enumerate(bodies):
        ctx = RequestContext(WS, f"raw{i:05d}", datetime.now(UTC), "127.0.0.1")
        request = []
        for el in json.loads(body)["elements"]:
            request.extend(
                (topic(m.topic), m.key, m.value) for m in validator.element(el, ctx, (), BULK).messages
            )
        messages += pack_messages(request, packs, lambda _t: 1_000_000, topic("ingest.records"))
    records = sum(r for _, r, _ in bodies)
    producer = new_producer(kafka)
    acked = 0

    def on_delivery(err, _msg) -> None:
        nonlocal acked
        if err is None:
            acked += 1

    sent = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        for t, k, v in messages:
            while True:
                try:
                    producer.produce(t, v, k, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.01)
            producer.poll(0)
        sent += len(messages)
    producer.flush(60)
    elapsed = time.monotonic() - started
    return {"records_per_s": acked / len(messages) * records / elapsed, "sent": sent}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--write", type=Path, help="write the results as Markdown to this file")
    parser.add_argument("--shape", choices=("mix", "e2e"), default="mix", help="request bodies (see above)")
    parser.add_argument("--profile", type=int, default=0, help="py-spy the gateway for S s of the peak")
    parser.add_argument("--profile-raw", type=Path, help="keep py-spy's collapsed stacks in this file")
    args = parser.parse_args()

    kafka = KafkaSettings(
        bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}",
    )
    create_topics(new_admin(kafka), load_catalogue(kafka.topic_prefix))
    bodies = e2e_payloads(16) if args.shape == "e2e" else [payload(seed) for seed in range(16)]
    avg_bytes = sum(len(b) for b, _, _ in bodies) / len(bodies)
    avg_records = sum(r for _, r, _ in bodies) / len(bodies)
    avg_events = sum(e for _, _, e in bodies) / len(bodies)

    profile: dict | None = None
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_gateway(kafka, Path(tmp))
        try:
            asyncio.run(wait_healthy(url))
            asyncio.run(closed_loop(url, bodies, 3, args.concurrency))  # warm-up
            spy = start_py_spy(proc.pid, args.profile, Path(tmp) / "gateway.spy") if args.profile else None
            cpu_before, threads_before = cpu_seconds(proc.pid), thread_cpu(proc.pid)
            peak = asyncio.run(closed_loop(url, bodies, args.seconds, args.concurrency))
            cpu_peak = cpu_seconds(proc.pid) - cpu_before
            threads = {k: v - threads_before.get(k, 0.0) for k, v in thread_cpu(proc.pid).items()}
            cpu_share = cpu_peak / peak["seconds"]
            if spy is not None:
                spy.wait(60)
                profile = summarize_py_spy(Path(tmp) / "gateway.spy")
                if args.profile_raw and (Path(tmp) / "gateway.spy").exists():
                    shutil.copy(Path(tmp) / "gateway.spy", args.profile_raw)
            half_rate = peak["requests"] / 2
            cpu_before = cpu_seconds(proc.pid)
            latency = asyncio.run(open_loop(url, bodies, half_rate, args.seconds))
            cpu_half = cpu_seconds(proc.pid) - cpu_before
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    raw = raw_baseline(kafka, bodies, args.seconds)
    drop_topics(kafka)
    peak_events = peak["events"] * peak["seconds"]
    half_events = latency["requests"] * avg_events

    ratio = peak["records"] / raw["records_per_s"]
    rows = [
        (
            "request body",
            f"{avg_bytes / 1024:.1f} KB, {avg_records:.0f} records ({avg_events:.0f} event actions)",
        ),
        ("gateway accepted events/s (actions)", f"{peak['events']:,.0f}"),
        ("gateway accepted records/s (users + events)", f"{peak['records']:,.0f}"),
        ("gateway CPU use during the peak phase", f"{cpu_share:.2f} cores"),
        ("gateway accepted events/s per busy gateway core", f"{peak['events'] / max(cpu_share, 1e-9):,.0f}"),
        (
            "gateway CPU per accepted event: peak / half rate",
            f"{cpu_peak / max(peak_events, 1) * 1e6:.1f} / {cpu_half / max(half_events, 1) * 1e6:.1f} µs",
        ),
        (
            "of which per thread (µs per event, peak)",
            ", ".join(
                f"{name} {sec / max(peak_events, 1) * 1e6:.1f}"
                for name, sec in sorted(threads.items(), key=lambda kv: -kv[1])
                if sec > 0
            ),
        ),
        ("gateway requests/s", f"{peak['requests']:,.1f} (non-200: {peak['errors']:.1f}/s)"),
        ("raw producer records/s, same bytes", f"{raw['records_per_s']:,.0f}"),
        ("gateway / raw", f"{ratio:.2f}"),
        (
            f"latency at half rate ({half_rate:.1f} req/s)",
            f"p50 {latency['p50_ms']:.1f} ms, p99 {latency['p99_ms']:.1f} ms"
            f" ({latency['requests']} requests, {latency['errors']} non-200)",
        ),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    text = (
        f"| measure | value |\n|---|---|\n{table}\n\nconcurrency {args.concurrency}, "
        f"{args.seconds:.0f} s per phase, shape {args.shape}, broker {kafka.bootstrap_servers}, "
        f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    if profile is not None:
        text += "\n\n" + profile_text(profile)
    print(text)
    if args.write:
        args.write.write_text(text + "\n")


def profile_text(profile: dict) -> str:
    """py-spy's summary: functions by own samples, files by own samples, functions by inclusive ones."""
    if "error" in profile:
        return f"profile: {profile['error']}"
    lines = [f"py-spy --gil, {profile['samples']} samples"]
    for title, key in (("self", "self"), ("self by file", "self_by_file"), ("inclusive", "inclusive")):
        lines.append(f"\n{title}:")
        lines += [f"  {share * 100:5.1f} %  {name}" for name, share in profile[key]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
