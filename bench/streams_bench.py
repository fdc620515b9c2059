"""Streams sink benchmark: events/s delivered by one sink process, beside a bare consumer of the same topic.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 .venv/bin/python -m bench.streams_bench [--events 300000]

1. Preloads N EnrichedEvents into a fresh events topic (6 partitions).
2. Baseline: a bare confluent-kafka consumer reads the whole topic (no decoding) -> events/s.
3. Sink: one StreamSink (this process) delivers them all to a fast local aiohttp endpoint running in
   another process (it only counts events) -> events/s and the ratio to the baseline.
4. Latency: with the sink caught up, events are produced at a moderate rate; the endpoint records
   (delivery time - produce time) per event; the baseline is a bare consumer's produce->consume delay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from inflow.config.settings import KafkaSettings
from inflow.config.topics import create_topics, load_catalogue
from inflow.kafka.clients import new_admin, new_consumer, new_producer
from inflow.local.process import free_port, port_open
from inflow.schemas.serde import AvroSerde
from inflow.sinks.streams.definitions import StreamDefinition
from inflow.sinks.streams.sink import StreamSink


def run_endpoint(port: int) -> None:
    """A fast endpoint: counts events per body; bodies carrying a produce time yield delivery delays."""
    from aiohttp import web

    state: dict[str, Any] = {"count": 0, "requests": 0, "delays": [], "first": None, "last": None}

    async def ingest(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        state["count"] += body.count(b'"event_uuid"')
        state["requests"] += 1
        state["first"] = state["first"] or now
        state["last"] = now
        if b'"sent_ms"' in body:
            for event in json.loads(body)["events"]:
                state["delays"].append(now * 1000 - event["event_attributes"]["sent_ms"])
        return web.Response(status=200)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(state)

    async def reset(request: web.Request) -> web.Response:
        state.update(count=0, requests=0, delays=[], first=None, last=None)
        return web.json_response({})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/ingest", ingest)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def endpoint_call(port: int, path: str, method: str = "GET") -> dict[str, Any]:
    import urllib.request

    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method, data=b"" if method == "POST" else None
    )
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - local endpoint
        return json.loads(resp.read())


def event(i: int, sent_ms: int | None = None) -> dict[str, Any]:
    now = datetime.now(UTC)
    attrs = {"amount": i, "currency": "EUR", "sku": f"sku-{i % 977}"}
    if sent_ms is not None:
        attrs["sent_ms"] = sent_ms
    uid = f"u-{i % 10007}"
    return {
        "workspace_id": "W1",
        "event_uuid": str(uuid.uuid4()),
        "event_name": "Purchase",
        "event_code": "Purchase",
        "event_time": int(now.timestamp()),
        "event_type": "USER_ACTION_EVENT",
        "event_source": "MOENGAGE",
        "uid": uid,
        "customer_id": f"c-{i % 10007}",
        "event_attributes_json": json.dumps(attrs),
        "user_attributes_json": json.dumps({"moengage_user_id": uid, "city": "Paris", "plan": "gold"}),
        "device_attributes_json": '{"moengage_device_id":"d-1","os":"android","app_version":"8.1"}',
        "push_id": None,
        "email_id": None,
        "mobile_number": None,
        "platform": "ANDROID",
        "received_at": now,
        "ingested_at": now,
    }


def preload(kafka: KafkaSettings, n: int) -> None:
    encode = AvroSerde().encoder("EnrichedEvent")
    producer = new_producer(kafka)
    topic = kafka.topic("events")
    for i in range(n):
        e = event(i)
        while True:
            try:
                producer.produce(topic, key=f"W1:{e['uid']}".encode(), value=encode(e))
                break
            except BufferError:
                producer.poll(0.1)
        if i % 10000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0


def bare_consumer_rate(kafka: KafkaSettings, n: int) -> tuple[float, float]:
    """(events/s, CPU µs per event of this process) of a bare consumer reading the whole topic."""
    consumer = new_consumer(kafka, f"bench-bare-{uuid.uuid4().hex[:6]}")
    consumer.subscribe([kafka.topic("events")])
    seen, started = 0, None
    cpu = time.process_time()
    while seen < n:
        msgs = consumer.consume(1000, 1.0)
        if msgs and started is None:
            started = time.monotonic()
        seen += sum(1 for m in msgs if not m.error())
    elapsed = time.monotonic() - (started or time.monotonic())
    cpu = time.process_time() - cpu
    consumer.close()
    return n / elapsed, cpu / n * 1e6


def start_py_spy(seconds: int, out: str) -> subprocess.Popen[bytes] | None:
    """py-spy (not a dependency) recording this process for ``seconds``, the GIL holder only."""
    tool = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(tool):
        print("py-spy not installed: no profile")
        return None
    cmd = [tool, "record", "--gil", "--nonblocking", "-r", "200", "-d", str(seconds), "-f", "raw"]
    return subprocess.Popen(
        [*cmd, "-o", out, "-p", str(os.getpid())], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def summarize_profile(path: str, top: int = 30) -> None:
    """Self and inclusive share of the sampled functions (py-spy raw: folded stacks with counts)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            n = int(count)
            total += n
            # "function (path/file.py:line)" -> "function (file.py)": shares per function, not per line
            frames = [
                fr.split(" (")[0] + " (" + fr.rsplit("/", 1)[-1].split(":")[0].rstrip(")") + ")"
                for fr in stack.split(";")
            ]
            own[frames[-1]] += n
            for fr in set(frames):
                inclusive[fr] += n
    print(f"profile   {total} samples (py-spy --gil); self / inclusive share:")
    for name, n in own.most_common(top):
        print(f"          {100 * n / total:5.1f} % / {100 * inclusive[name] / total:5.1f} %  {name}")


class SinkInThread:
    def __init__(self, kafka: KafkaSettings, definition: StreamDefinition) -> None:
        self.sink = StreamSink(kafka, [definition], None)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.thread.start()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        await self.sink.run(self.stop_event)

    def stop(self) -> None:
        while self.loop is None or self.stop_event is None:
            time.sleep(0.05)
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(60)


def wait_count(port: int, n: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        stats = endpoint_call(port, "/stats")
        if stats["count"] >= n or time.monotonic() > deadline:
            return stats
        time.sleep(0.2)


def latency_phase(
    kafka: KafkaSettings, port: int, rate: int, seconds: float
) -> tuple[list[float], list[float]]:
    """Produce at ``rate``/s; return (sink delivery delays, bare consumer delays) in ms."""
    bare = new_consumer(kafka, f"bench-lat-{uuid.uuid4().hex[:6]}", **{"auto.offset.reset": "latest"})
    bare.subscribe([kafka.topic("events")])
    bare_delays: list[float] = []
    stop = threading.Event()

    def read_bare() -> None:
        while not stop.is_set():
            m = bare.poll(0.2)  # one record as soon as it is there: the lowest delay a consumer can see
            if m is not None and not m.error():
                bare_delays.append(time.time() * 1000 - m.timestamp()[1])

    bare.consume(1, 5.0)  # join the group before producing
    reader = threading.Thread(target=read_bare, daemon=True)
    reader.start()
    endpoint_call(port, "/reset", "POST")
    encode = AvroSerde().encoder("EnrichedEvent")
    producer = new_producer(kafka, **{"linger.ms": 1})
    total = int(rate * seconds)
    started = time.monotonic()
    for i in range(total):
        target = started + i / rate
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        e = event(i, sent_ms=int(time.time() * 1000))
        producer.produce(kafka.topic("events"), key=f"W1:{e['uid']}".encode(), value=encode(e))
        producer.poll(0)
    producer.flush(30)
    stats = wait_count(port, total, 60)
    stop.set()
    reader.join(5)
    bare.close()
    return stats["delays"], bare_delays


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--rate", type=int, default=2_000, help="events/s in the latency phase")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the latency phase")
    parser.add_argument("--max-in-flight", type=int, default=4)
    parser.add_argument("--profile", type=int, default=0, help="py-spy the sink for S seconds")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency phase")
    args = parser.parse_args()
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    kafka = KafkaSettings(bootstrap_servers=servers, topic_prefix=f"bench{uuid.uuid4().hex[:6]}")
    create_topics(new_admin(kafka), load_catalogue(kafka.topic_prefix))
    port = free_port()
    endpoint = multiprocessing.get_context("spawn").Process(target=run_endpoint, args=(port,), daemon=True)
    endpoint.start()
    while not port_open(port):
        time.sleep(0.1)
    try:
        t0 = time.monotonic()
        preload(kafka, args.events)
        print(f"preloaded {args.events} EnrichedEvents in {time.monotonic() - t0:.1f}s")
        baseline, bare_cpu = bare_consumer_rate(kafka, args.events)
        print(f"baseline  bare consumer (no decode): {baseline:12,.0f} events/s, {bare_cpu:.1f} µs CPU/event")
        url = f"http://127.0.0.1:{port}/ingest"
        definition = StreamDefinition(
            id="bench",
            url=url,
            app_name="Bench",
            max_in_flight=args.max_in_flight,
            start_at=datetime.fromtimestamp(0, UTC),  # a new stream starts at the end unless told
        )
        profile_out = os.path.join(tempfile.mkdtemp(prefix="streams-bench-"), "sink.txt")
        load = os.getloadavg()[0]
        cpu = time.process_time()
        sink = SinkInThread(kafka, definition)
        spy = start_py_spy(args.profile, profile_out) if args.profile else None
        try:
            stats = wait_count(port, args.events, 600)
            cpu = time.process_time() - cpu
            span = (stats["last"] - stats["first"]) or float("nan")
            rate = stats["count"] / span
            done = f"delivered {stats['count']} events in {stats['requests']} requests over {span:.1f}s"
            print(f"sink      {done}: {rate:12,.0f} events/s (target >= 50,000)")
            print(f"ratio     sink / bare consumer: {rate / baseline:.3f}")
            per_event = cpu / max(1, stats["count"]) * 1e6
            print(
                f"cpu       sink process {cpu:.2f} s = {per_event:6.1f} µs/event "
                f"(bare consumer {bare_cpu:.1f} µs/event; "
                f"load average {load:.2f} -> {os.getloadavg()[0]:.2f})"
            )
            if spy is not None:
                spy.wait()
                summarize_profile(profile_out)
            if args.no_latency:
                return
            sink_delays, bare_delays = latency_phase(kafka, port, args.rate, args.seconds)
            print(f"latency   {args.rate} events/s for {args.seconds:g}s: events topic arrival -> delivery")
            for name, values in (("sink", sink_delays), ("bare consumer", bare_delays)):
                p50, p99 = pct(values, 0.5), pct(values, 0.99)
                print(f"          {name:14} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  (n={len(values)})")
        finally:
            sink.stop()
    finally:
        endpoint.terminate()
        endpoint.join(10)
        new_admin(kafka).delete_topics([s.name for s in load_catalogue(kafka.topic_prefix)])


if __name__ == "__main__":
    main()
