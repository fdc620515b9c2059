"""Gateway memory with many profiles: Get User's on-disk store against the former in-memory dict.

    .venv/bin/python -m bench.get_user_bench [--profiles 1000000] [--write docs/bench-get-user.md]

One ``inflow gateway`` process is started on an empty ``profiles`` topic (RSS before), then ``--profiles``
profile snapshots are published and the gateway's RSS is read once Get User finds the last one (RSS
after). The baseline, in the same run on the same topic: a child process that follows the topic into the
dictionaries the gateway used to keep (uid, merge and identifier indexes in memory), RSS before and after.

The broker is ``KAFKA_BOOTSTRAP_SERVERS`` (default 127.0.0.1:9092); topics get a fresh prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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

import aiohttp

from bench.gateway_bench import HEADERS, WS, start_gateway, wait_healthy
from inflow.config.settings import KafkaSettings
from inflow.config.topics import create_topics, load_catalogue
from inflow.kafka.clients import new_admin, new_producer
from inflow.kafka.view import CompactedView
from inflow.schemas.serde import AvroSerde

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def profile(i: int) -> dict[str, Any]:
    return {
        "workspace_id": WS,
        "uid": f"uid-{i:09d}",
        "customer_id": f"user-{i}@example.com",
        "anonymous_ids": [],
        "identifiers": {"email": f"user-{i}@example.com"},
        "attributes_json": json.dumps(
            {"u_fn": "Jane", "plan": ["free", "pro", "team"][i % 3], "ltv": i % 997}
        ),
        "platforms": ["ANDROID"],
        "devices_json": "[]",
        "first_seen": NOW,
        "last_seen": NOW,
        "merged_into": None,
        "merged_uids": [],
        "updated_at": NOW,
        "revision": 1,
        "deleted": False,
    }


def publish(kafka: KafkaSettings, n: int) -> None:
    serde = AvroSerde(kafka.schema_registry_url)
    producer = new_producer(kafka, **{"linger.ms": 50, "compression.type": "lz4"})
    topic = kafka.topic("profiles")
    for i in range(n):
        rec = profile(i)
        while True:
            try:
                producer.produce(topic, serde.encode("UserProfile", rec), f"{WS}:{rec['uid']}".encode())
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    if producer.flush(300):
        raise RuntimeError("profiles not all acknowledged")


async def found(url: str, customer_id: str, timeout: float) -> None:
    body = {"data": {"identifiers": [{"identifier_type": "customer_id", "identifier": customer_id}]}}
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(headers=HEADERS) as session:
        while time.monotonic() < deadline:
            async with session.post(f"{url}/v1/customers/export?app_id={WS}", json=body) as resp:
                if resp.status == 200 and (await resp.json())["data"]["users"]:
                    return
            await asyncio.sleep(1)
    raise RuntimeError(f"{customer_id} not found in time")


def dict_child(prefix: str, bootstrap: str, n: int) -> None:
    """The former store: every profile and index entry in dictionaries of this process."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix)
    serde = AvroSerde(kafka.schema_registry_url)
    by_uid: dict[tuple[str, str], tuple[str, str | None, dict[str, str], dict[str, Any]]] = {}
    revision: dict[tuple[str, str], int] = {}
    index: dict[tuple[str, str, str], str] = {}

    def apply(msg: Any) -> None:
        _, rec = serde.decode(msg.value(), expected="UserProfile")
        ident = (rec["workspace_id"], rec["uid"])
        revision[ident] = rec["revision"]
        by_uid[ident] = (rec["workspace_id"], rec["customer_id"], dict(rec["identifiers"]), rec)
        index[(rec["workspace_id"], "customer_id", rec["customer_id"])] = rec["uid"]
        for name, val in rec["identifiers"].items():
            index[(rec["workspace_id"], name, val)] = rec["uid"]

    before = rss_mib(os.getpid())
    view = CompactedView(kafka, kafka.topic("profiles"), apply=apply, name="profiles").start()
    deadline = time.monotonic() + 1800
    while len(by_uid) < n and time.monotonic() < deadline:
        time.sleep(1)
    after = rss_mib(os.getpid())
    view.stop()
    print(json.dumps({"before": before, "after": after, "profiles": len(by_uid)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--write", type=Path, help="write the results as Markdown to this file")
    parser.add_argument("--dict-child", nargs=2, metavar=("PREFIX", "BOOTSTRAP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dict_child:
        dict_child(*args.dict_child, args.profiles)
        return

    kafka = KafkaSettings(
        bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}",
    )
    create_topics(new_admin(kafka), load_catalogue(kafka.topic_prefix))
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_gateway(kafka, Path(tmp))
        try:
            asyncio.run(wait_healthy(url))
            before = rss_mib(proc.pid)
            started = time.monotonic()
            publish(kafka, args.profiles)
            asyncio.run(found(url, f"user-{args.profiles - 1}@example.com", 1800))
            loaded_s = time.monotonic() - started
            after = rss_mib(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    child = subprocess.run(
        [sys.executable, "-m", "bench.get_user_bench", "--profiles", str(args.profiles), "--dict-child"]
        + [kafka.topic_prefix, str(kafka.bootstrap_servers)],
        capture_output=True,
        text=True,
        check=True,
    )
    baseline = json.loads(child.stdout.strip().splitlines()[-1])
    growth, dict_growth = after - before, baseline["after"] - baseline["before"]
    rows = [
        ("profiles", f"{args.profiles:,}"),
        ("gateway RSS, empty profiles topic", f"{before:,.0f} MiB"),
        ("gateway RSS, all profiles loaded (on-disk store)", f"{after:,.0f} MiB (+{growth:,.0f} MiB)"),
        ("publish + load until Get User finds the last", f"{loaded_s:,.0f} s"),
        (
            "raw: the former in-memory dict, same topic",
            f"{baseline['before']:,.0f} -> {baseline['after']:,.0f} MiB (+{dict_growth:,.0f} MiB)",
        ),
        ("growth, on-disk / in-memory", f"{growth / max(dict_growth, 1e-9):.3f}"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    text = (
        f"| measure | value |\n|---|---|\n{table}\n\nbroker {kafka.bootstrap_servers}, "
        f"{os.cpu_count()} CPUs, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    print(text)
    if args.write:
        args.write.write_text(text + "\n")


if __name__ == "__main__":
    main()
