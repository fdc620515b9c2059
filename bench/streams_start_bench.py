"""A new stream's start: how many old events it replays, and how soon the first new event arrives.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 .venv/bin/python -m bench.streams_start_bench [--events 100000]

1. Preloads N EnrichedEvents (the history) into a fresh events topic (6 partitions).
2. Starts one StreamSink (this process) with no stream, then registers a stream the way
   ``inflow streams add`` does (its definition published to ``control.streams``).
3. From the registration on, produces one new, marked event every 0.2 s; the endpoint (another process)
   counts old and new events and notes when the first new one arrives.

Prints: old events delivered to the new stream, seconds from registration to the first new event, and
seconds from that event's produce time to its delivery. The baseline in the same run is a bare consumer
joining a fresh group with ``auto.offset.reset=latest`` and reading the first new event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from cryptography.fernet import Fernet

from bench.streams_bench import endpoint_call, event, preload
from inflow.config.secrets import SecretBox
from inflow.config.settings import KafkaSettings
from inflow.config.topics import create_topics, load_catalogue
from inflow.kafka.clients import new_admin, new_consumer, new_producer
from inflow.local.process import free_port, port_open
from inflow.schemas.serde import AvroSerde
from inflow.sinks.streams.control import DEFINITIONS_TOPIC, definition_record, publish
from inflow.sinks.streams.definitions import StreamDefinition
from inflow.sinks.streams.sink import StreamSink


def run_endpoint(port: int) -> None:
    """Counts old events (no mark) and new ones (``new_ms`` attribute); notes the first new arrival."""
    from aiohttp import web

    state: dict[str, Any] = {"old": 0, "new": 0, "first_new_at": None, "first_new_delay_ms": None}

    async def ingest(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        now = time.time()
        for e in body["events"]:
            mark = e["event_attributes"].get("new_ms")
            if mark is None:
                state["old"] += 1
                continue
            state["new"] += 1
            if state["first_new_at"] is None:
                state["first_new_at"] = now
                state["first_new_delay_ms"] = now * 1000 - mark
        return web.Response(status=200)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(state)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/ingest", ingest)
    app.router.add_get("/stats", stats)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def new_event(i: int) -> dict[str, Any]:
    e = event(i)
    attrs = json.loads(e["event_attributes_json"]) | {"new_ms": int(time.time() * 1000)}
    e["event_attributes_json"] = json.dumps(attrs)
    return e


class Ticker:
    """Produces one new marked event every ``every`` seconds until stopped."""

    def __init__(self, kafka: KafkaSettings, every: float = 0.2) -> None:
        self.kafka, self.every = kafka, every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        encode = AvroSerde().encoder("EnrichedEvent")
        producer = new_producer(self.kafka, **{"linger.ms": 0})
        i = 0
        while not self.stop.is_set():
            e = new_event(i)
            producer.produce(self.kafka.topic("events"), key=f"W1:{e['uid']}".encode(), value=encode(e))
            producer.poll(0)
            i += 1
            self.stop.wait(self.every)
        producer.flush(10)


class SinkThread:
    def __init__(self, sink: StreamSink) -> None:
        self.sink = sink
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


def bare_consumer_first_new(kafka: KafkaSettings, timeout: float = 120) -> float:
    """Seconds a bare consumer of a fresh group (offset reset latest) takes to read its first record."""
    consumer = new_consumer(kafka, f"bench-start-{uuid.uuid4().hex[:6]}", **{"auto.offset.reset": "latest"})
    consumer.subscribe([kafka.topic("events")])
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout:
            m = consumer.poll(0.2)
            if m is not None and not m.error():
                return time.monotonic() - started
        return float("nan")
    finally:
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000, help="old events already in the topic")
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args()
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    kafka = KafkaSettings(bootstrap_servers=servers, topic_prefix=f"bench{uuid.uuid4().hex[:6]}")
    create_topics(new_admin(kafka), load_catalogue(kafka.topic_prefix))
    port = free_port()
    endpoint = multiprocessing.get_context("spawn").Process(target=run_endpoint, args=(port,), daemon=True)
    endpoint.start()
    while not port_open(port):
        time.sleep(0.1)
    box = SecretBox(Fernet.generate_key())
    ticker = Ticker(kafka)
    sink_thread = None
    try:
        t0 = time.monotonic()
        preload(kafka, args.events)
        print(f"preloaded {args.events} EnrichedEvents in {time.monotonic() - t0:.1f}s")
        sink_thread = SinkThread(StreamSink(kafka, [], box))
        time.sleep(3)  # the sink has read the (empty) control topics and waits for definitions
        definition = StreamDefinition(id="fresh", url=f"http://127.0.0.1:{port}/ingest", app_name="Bench")
        stored = registered(definition, box)
        serde = AvroSerde()
        ticker.thread.start()
        registered_at = time.time()
        record = serde.encode("StreamDefinition", definition_record("fresh", stored))
        publish(kafka, DEFINITIONS_TOPIC, "fresh", record)
        deadline = time.monotonic() + args.timeout
        stats = endpoint_call(port, "/stats")
        while stats["first_new_at"] is None and time.monotonic() < deadline:
            time.sleep(0.1)
            stats = endpoint_call(port, "/stats")
        time.sleep(2)
        stats = endpoint_call(port, "/stats")
        first = stats["first_new_at"]
        wait = float("nan") if first is None else first - registered_at
        print(f"old events delivered to the new stream: {stats['old']} of {args.events}")
        print(f"registration -> first new event delivered: {wait:.1f} s")
        print(f"first new event: produce -> delivery {stats['first_new_delay_ms'] or float('nan'):.0f} ms")
        bare = bare_consumer_first_new(kafka)
        print(f"baseline  bare consumer, fresh group, offset reset latest: {bare:.1f} s")
    finally:
        ticker.stop.set()
        if sink_thread is not None:
            sink_thread.stop()
        endpoint.terminate()
        endpoint.join(10)
        new_admin(kafka).delete_topics([s.name for s in load_catalogue(kafka.topic_prefix)])


def registered(definition: StreamDefinition, box: SecretBox) -> dict[str, Any]:
    """The stored form ``inflow streams add`` writes (with the start it records, when it records one)."""
    try:
        from inflow.sinks.streams.definitions import starting
    except ImportError:  # before streams started at "now"
        return definition.stored(box)
    return starting(definition, None, datetime.now(UTC)).stored(box)


if __name__ == "__main__":
    main()
