"""End to end: Bulk API in, Streams endpoint out, every component a real ``inflow`` process.

    .venv/bin/python -m bench.e2e_bench --max [--seconds 30] [--workers 1]        # throughput
    .venv/bin/python -m bench.e2e_bench --rate 5000 [--seconds 30]                 # latency

A broker (``KAFKA_BOOTSTRAP_SERVERS``, or a private one started here), the topic catalogue under a fresh
prefix, ``inflow gateway``, ``--workers`` × ``inflow worker`` and ``inflow sink`` as subprocesses, and a
Streams endpoint (``bench/e2e_receiver.py``, aiohttp on 127.0.0.1, its own process) registered as the
workspace's stream in the YAML config. The pipeline is driven only from outside: HTTP in, HTTP out.

Load: Bulk API requests of about 100 KB, each 20 users × (1 ``customer`` element + one ``event`` element of
18 actions) = 360 events, users drawn round-robin from ``--users``. Every event carries ``bench_r`` (request
number) and ``bench_k`` (index in the request) as attributes, so the endpoint can tell each event apart.

* ``--rate R``: open loop, one request every 360/R s (a request that would exceed ``--max-inflight`` is
  skipped and counted, never sent late in a burst).
* ``--max``: ``--concurrency`` requests in flight, and no more than ``--backlog`` events accepted by the
  gateway but not yet at the endpoint (without that bound the gateway, which accepts ~70k events/s, would
  only fill the ingest topic: the sustained rate is what the whole pipeline delivers).

Figures over the steady window (``--warmup`` s after the start to the end of sending): events/s accepted
(200 answers) and delivered (unique events at the endpoint); latency per event from the 200 answer of its
request to its receipt at the endpoint (p50/p95/p99/max, events of requests answered inside the window);
CPU seconds of each process (``/proc/<pid>/stat``, process trees) as cores and µs per delivered event; the
lag of every consumer group of the prefix sampled every 2 s; then the raw baseline in the same run on the
same broker: the record bytes the gateway wrote, sent through two bare Kafka hops (produce → copy →
consume, as the pipeline's records cross two topics), and the ratio.

The narrowest stage: a consumer group whose lag grew over the window (the stage behind it cannot keep up),
else the pipeline process with the highest CPU per event. ``--profile-worker S`` records the first worker
with py-spy for S seconds of the window (if ``py-spy`` is installed; it is not a dependency), sampling only
the thread that holds the GIL (``--gil``: a thread waiting in librdkafka is not counted as busy), and prints
the functions where its Python time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.e2e_kafka import LagSampler, RawResult, raw_two_hops, read_records
from bench.e2e_receiver import K_SPACE, PROBE, serve
from bench.pipeline import (
    Component,
    StreamSpec,
    cpu_seconds,
    gateway_healthy,
    inflow_env,
    load_average,
    machine_cpu,
    start_local_kafka,
    stop_all,
    wait_until,
    write_config,
)
from inflow.config.settings import KafkaSettings
from inflow.config.topics import create_topics, load_catalogue
from inflow.kafka.clients import new_admin
from inflow.local.process import free_port
from inflow.schemas.packs import PACK_RECORD, PackEncoder
from inflow.schemas.serde import AvroSerde

WS, KEY, STREAM_ID = "E2E", "e2e-bench-data-api-key", "e2e"
USERS_PER_REQUEST, EVENTS_PER_USER = 20, 18
EVENTS_PER_REQUEST = USERS_PER_REQUEST * EVENTS_PER_USER
RECORDS_PER_REQUEST = USERS_PER_REQUEST * (1 + EVENTS_PER_USER)
BODY_TARGET = 100 * 1024 - 1024  # the gateway's limit is 100 KB; a margin for the widest numbers
ACTIONS = ("ProductViewed", "AddedToCart", "Purchased", "AppOpened", "Searched", "Shared")


# --- request bodies --------------------------------------------------------------------------------------
class Bodies:
    """Request ``n`` as bytes, joined from pre-encoded pieces (the user ids and ``n`` are the only parts
    that change), so the load generator spends microseconds per 100 KB body."""

    def __init__(self, users: int, now: int) -> None:
        self.users = users
        self.blocks = [self._pieces(j, now, pad=0) for j in range(USERS_PER_REQUEST)]
        widest = self.body(10**9 - 1, users=10**9)
        pad = max(0, (BODY_TARGET - len(widest)) // USERS_PER_REQUEST)
        self.blocks = [self._pieces(j, now, pad) for j in range(USERS_PER_REQUEST)]
        self.max_bytes = len(self.body(10**9 - 1, users=10**9))
        if self.max_bytes > 100 * 1024:
            raise ValueError(f"request body of {self.max_bytes} bytes is over the gateway's 100 KB")

    @staticmethod
    def _pieces(j: int, now: int, pad: int) -> list[bytes]:
        customer = {
            "type": "customer",
            "customer_id": "@U@",
            "attributes": {
                "name": "Bench User",
                "first_name": "Bench",
                "email": "@U@@example.com",
                "plan": ("free", "pro", "team")[j % 3],
                "ltv": 120.5 + j,
                "city": "Pune",
                "last_request": "@R@",
                "notes": "x" * pad,
            },
        }
        actions = [
            {
                "action": ACTIONS[(j + a) % len(ACTIONS)],
                "attributes": {
                    "bench_r": "@R@",
                    "bench_k": j * EVENTS_PER_USER + a,
                    "product_id": f"sku-{(j * 31 + a * 7) % 10_000}",
                    "price": 10.0 + a + j / 100,
                    "currency": "USD",
                    "category": "Accessories",
                    "quantity": 1 + a % 3,
                },
                "platform": "ANDROID",
                "app_version": "4.2.1",
                "current_time": now,
                "user_timezone_offset": 19800,
            }
            for a in range(EVENTS_PER_USER)
        ]
        event = {"type": "event", "customer_id": "@U@", "actions": actions}
        text = json.dumps(customer, separators=(",", ":")) + "," + json.dumps(event, separators=(",", ":"))
        # Numbers go in bare: "@R@" (quoted) becomes an integer, @U@ inside strings stays a string.
        text = text.replace('"@R@"', "@R@")
        return [p.encode() for p in re.split(r"(@U@|@R@)", text)]

    def body(self, n: int, users: int | None = None) -> bytes:
        users = users or self.users
        r = str(n).encode()
        parts = [b'{"type":"transition","elements":[']
        for j, pieces in enumerate(self.blocks):
            if j:
                parts.append(b",")
            u = b"u%d" % ((n * USERS_PER_REQUEST + j) % users)
            parts.extend(u if p == b"@U@" else r if p == b"@R@" else p for p in pieces)
        parts.append(b"]}")
        return b"".join(parts)


# --- load generator --------------------------------------------------------------------------------------
@dataclass
class LoadResult:
    sent: int = 0
    skipped: int = 0  # rate mode: slots skipped because --max-inflight requests were pending
    answered_at: dict[int, float] = field(default_factory=dict)  # request n -> monotonic time of its 200
    accepted_events: dict[int, int] = field(default_factory=dict)  # request n -> events accepted
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    failed_elements: int = 0
    request_ms: list[float] = field(default_factory=list)


class Load:
    def __init__(self, url: str, bodies: Bodies, delivered: Any, args: argparse.Namespace) -> None:
        self.url = f"{url}/v1/transition/{WS}"
        auth = base64.b64encode(f"{WS}:{KEY}".encode()).decode()
        self.headers = {"Authorization": f"Basic {auth}", "Content-Type": "application/json"}
        self.bodies = bodies
        self.delivered = delivered
        self.args = args
        self.result = LoadResult()
        self.next_n = 1
        self.inflight = 0

    def accepted_total(self) -> int:
        return sum(self.result.accepted_events.values())

    async def send(self, session: aiohttp.ClientSession, n: int) -> None:
        res = self.result
        data = self.bodies.body(n)
        self.inflight += 1
        started = time.monotonic()
        try:
            async with session.post(self.url, data=data, headers=self.headers) as resp:
                payload = await resp.read()
                now = time.monotonic()
                res.statuses[resp.status] += 1
                if resp.status == 200:
                    failed = json.loads(payload).get("failed_elements", [])
                    res.failed_elements += len(failed)
                    res.answered_at[n] = now
                    # a failed customer element costs no event; a failed event element its 18
                    res.accepted_events[n] = EVENTS_PER_REQUEST - EVENTS_PER_USER * sum(
                        1 for f in failed if f.get("index", 0) % 2 == 1
                    )
                    res.request_ms.append((now - started) * 1000)
        except (TimeoutError, aiohttp.ClientError) as exc:
            res.errors[type(exc).__name__] += 1
        finally:
            self.inflight -= 1

    async def run(self, until: float) -> None:
        timeout = aiohttp.ClientTimeout(total=60)
        connector = aiohttp.TCPConnector(limit=max(self.args.concurrency, self.args.max_inflight))
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            if self.args.rate:
                await self._paced(session, until)
            else:
                await asyncio.gather(
                    *(self._closed_loop(session, until) for _ in range(self.args.concurrency))
                )

    async def _closed_loop(self, session: aiohttp.ClientSession, until: float) -> None:
        backlog = self.args.backlog
        while time.monotonic() < until:
            if backlog and self.accepted_total() - self.delivered.value > backlog:
                await asyncio.sleep(0.01)
                continue
            n, self.next_n = self.next_n, self.next_n + 1
            self.result.sent += 1
            await self.send(session, n)

    async def _paced(self, session: aiohttp.ClientSession, until: float) -> None:
        interval = EVENTS_PER_REQUEST / self.args.rate
        started = time.monotonic()
        tasks: set[asyncio.Task[None]] = set()
        slot = 0
        while True:
            due = started + slot * interval
            if due >= until:
                break
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            slot += 1
            if self.inflight >= self.args.max_inflight:
                self.result.skipped += 1
                continue
            n, self.next_n = self.next_n, self.next_n + 1
            self.result.sent += 1
            task = asyncio.create_task(self.send(session, n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)


async def probe(url: str, bodies: Bodies, probe_count: Any, timeout: float) -> None:
    """One request tagged as request 0; returns once the endpoint saw its events (the pipeline is up)."""
    auth = base64.b64encode(f"{WS}:{KEY}".encode()).decode()
    headers = {"Authorization": f"Basic {auth}", "Content-Type": "application/json"}
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.post(
                f"{url}/v1/transition/{WS}", data=bodies.body(PROBE), headers=headers
            ) as r:
                if r.status == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("the gateway did not accept the probe request")
            await asyncio.sleep(1)
        while probe_count.value < EVENTS_PER_REQUEST:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the probe's events did not reach the endpoint ({probe_count.value} did)")
            await asyncio.sleep(0.2)


# --- figures ---------------------------------------------------------------------------------------------


def records_carried(values: list[bytes]) -> int:
    """Ingest records in these messages: a pack counts its items, any other message one."""
    serde = AvroSerde()
    header = PackEncoder(serde).header
    return sum(
        len(serde.decode(v, PACK_RECORD)[1]["records"]) if v[: len(header)] == header else 1 for v in values
    )


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[i]


def run_pipeline(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    own_kafka = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        own_kafka = start_local_kafka(work)
        bootstrap = own_kafka.bootstrap_servers
    broker_pid = args.broker_pid or (own_kafka.process.pid() if own_kafka else None)
    prefix = f"e2e{uuid.uuid4().hex[:8]}"
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix)
    catalogue = load_catalogue(prefix)
    create_topics(new_admin(kafka), catalogue)

    ctx = mp.get_context("spawn")
    delivered, probe_count = ctx.Value("q", 0, lock=False), ctx.Value("q", 0, lock=False)
    parent, child = ctx.Pipe()
    receiver = ctx.Process(
        target=serve, args=(child, delivered, probe_count), name="e2e-receiver", daemon=True
    )
    receiver.start()
    if not parent.poll(60):
        raise RuntimeError("the endpoint process did not start")
    endpoint = f"http://127.0.0.1:{parent.recv()}/streams"

    config = write_config(work / "inflow.yaml", WS, KEY, [StreamSpec(STREAM_ID, endpoint)])
    env = inflow_env(bootstrap, prefix, work / "home", config)
    gateway_port = free_port()
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    argvs = {"gateway": ["gateway", "--port", str(gateway_port)]}
    argvs |= {f"worker{i}": ["worker", "--name", f"w{i}"] for i in range(1, args.workers + 1)}
    argvs["sink"] = ["sink"]
    components = [Component(name, argv, env, work / f"{name}.log") for name, argv in argvs.items()]
    result: dict[str, Any] = {"prefix": prefix, "bootstrap": bootstrap, "load_before": load_average()}
    sampler = LagSampler(kafka)
    profiler: subprocess.Popen[bytes] | None = None
    try:
        for c in components:
            c.start()
        wait_until(lambda: gateway_healthy(components[0], gateway_url), 180, "the gateway's /health")
        bodies = Bodies(args.users, int(time.time()))
        result["body_bytes"] = bodies.max_bytes
        t_probe = time.monotonic()
        asyncio.run(probe(gateway_url, bodies, probe_count, args.start_timeout))
        result["probe_s"] = time.monotonic() - t_probe
        dead = [c.name for c in components if not c.alive]
        if dead:
            raise RuntimeError(f"{dead} exited during start-up")

        if (
            args.workers > 1
        ):  # all workers own partitions before the window starts (else a rebalance is measured)
            try:
                wait_until(
                    lambda: sampler.members(".processors") >= args.workers, 60, "workers to share the group"
                )
            except TimeoutError as exc:
                print(f"note: {exc}; measuring anyway", flush=True)
        sampler.start()
        pids = {c.name: c.pid for c in components}
        if broker_pid:
            pids["broker"] = broker_pid
        pids["load generator"] = os.getpid()
        pids["endpoint"] = receiver.pid or 0
        load = Load(gateway_url, bodies, delivered, args)
        t0 = time.monotonic()
        tw, te = t0 + args.warmup, t0 + args.seconds
        cpu: dict[str, list[float]] = {}
        machine: list[dict[str, float]] = []

        async def sample_cpu_at(t: float) -> None:
            await asyncio.sleep(max(0.0, t - time.monotonic()))
            machine.append(machine_cpu())
            for name, pid in pids.items():
                cpu.setdefault(name, []).append(cpu_seconds(pid, tree=name not in ("load generator",)))

        async def drive() -> None:
            nonlocal profiler
            await asyncio.gather(load.run(te), sample_cpu_at(tw), sample_cpu_at(te), start_profile(tw))

        async def start_profile(t: float) -> None:
            nonlocal profiler
            if args.profile_worker:
                await asyncio.sleep(max(0.0, t - time.monotonic()))
                profiler = start_py_spy(pids["worker1"], args.profile_worker, work / "worker1.pyspy")

        asyncio.run(drive())
        te_actual = time.monotonic()
        result["load_during"] = load_average()
        accepted = load.accepted_total()
        # Drain: every accepted event at the endpoint, or --drain seconds.
        drain_deadline = time.monotonic() + args.drain
        while delivered.value < accepted and time.monotonic() < drain_deadline:
            time.sleep(0.2)
        result["drain_s"] = time.monotonic() - te_actual
        sampler.stop()
        if profiler is not None:
            profiler.wait(args.profile_worker + 60)
        result["exit_codes"] = stop_all(components)

        parent.send("stop")
        stats = parent.recv()
        ids, times = array("q"), array("d")
        ids.frombytes(parent.recv_bytes())
        times.frombytes(parent.recv_bytes())
        receiver.join(30)
        result |= figures(args, load.result, stats, ids, times, tw, min(te, te_actual), cpu, sampler)
        result["machine"] = machine_use(machine, result["cpu"], te - tw)
        if args.profile_worker:
            result["profile"] = summarize_py_spy(work / "worker1.pyspy")
            if args.py_spy_out and (work / "worker1.pyspy").exists():
                shutil.copy(work / "worker1.pyspy", args.py_spy_out)

        ingest = [
            s.name for s in catalogue if s.short_name.startswith("ingest.") and s.short_name != "ingest.aux"
        ]
        records = read_records(kafka, ingest, args.raw_records)
        partitions = max(s.entry.partitions for s in catalogue if s.name in ingest)
        raw: RawResult = raw_two_hops(kafka, records, partitions)
        result["raw"] = {"records": raw.records, "seconds": raw.seconds, "records_per_s": raw.rate}
        # A message is one ingest record or a pack of one user's records of a request (schemas/packs.py).
        carried = records_carried([value for _, value in records])
        per_message = carried / len(records) if records else 1.0
        result["raw"]["records_per_message"] = per_message
        result["raw_events_per_s"] = raw.rate * per_message * EVENTS_PER_REQUEST / RECORDS_PER_REQUEST
        result["load_after"] = load_average()
        return result
    finally:
        if profiler is not None and profiler.poll() is None:
            profiler.terminate()
        sampler.stop()
        stop_all(components)
        if receiver.is_alive():
            receiver.terminate()
            receiver.join(10)
        if not args.keep_topics:
            drop_topics(kafka)
        if own_kafka is not None:
            own_kafka.stop()


def machine_use(
    samples: list[dict[str, float]], cpu: dict[str, dict[str, float]], window: float
) -> dict[str, float]:
    """The whole machine over the window, in cores: busy, steal (the hypervisor's, for other guests) and
    the busy time of processes that are neither the pipeline nor the bench (``other``). On a shared VM
    this is why two runs of the same code differ: a slow run shows steal or other work, not slower code."""
    if len(samples) != 2:
        return {}
    delta = {k: samples[1][k] - samples[0][k] for k in samples[0]}
    ours = sum(v["cpu_s"] for n, v in cpu.items() if n != "workers (all)")
    return {
        "busy_cores": delta["busy"] / window,
        "steal_cores": delta["steal"] / window,
        "idle_cores": delta["idle"] / window,
        "other_cores": max(0.0, delta["busy"] - ours) / window,
    }


def figures(
    args: argparse.Namespace,
    load: LoadResult,
    stats: dict[str, Any],
    ids: array[int],
    times: array[float],
    tw: float,
    te: float,
    cpu: dict[str, list[float]],
    sampler: LagSampler,
) -> dict[str, Any]:
    window = te - tw
    accepted_in = sum(e for n, e in load.accepted_events.items() if tw <= load.answered_at[n] <= te)
    delivered_in = sum(1 for t in times if tw <= t <= te)
    latencies = sorted(
        t - load.answered_at[r]
        for key, t in zip(ids, times, strict=True)
        if (r := key // K_SPACE) in load.answered_at and tw <= load.answered_at[r] <= te
    )
    expected = sum(e for n, e in load.accepted_events.items() if tw <= load.answered_at[n] <= te)
    delivered_rate = delivered_in / window
    cpu_use = {}
    for name, (c0, c1) in ((n, v) for n, v in cpu.items() if len(v) == 2):
        cpu_use[name] = {
            "cpu_s": c1 - c0,
            "cores": (c1 - c0) / window,
            "us_per_event": (c1 - c0) / delivered_in * 1e6 if delivered_in else float("nan"),
        }
    parts = [n for n in cpu_use if n in ("gateway", "sink", "broker") or re.fullmatch(r"worker\d+", n)]
    pipeline_us = sum(cpu_use[n]["us_per_event"] for n in parts)
    workers = [v for n, v in cpu_use.items() if n.startswith("worker")]
    if len(workers) > 1:
        cpu_use["workers (all)"] = {k: sum(w[k] for w in workers) for k in ("cpu_s", "cores", "us_per_event")}
    lag_start, lag_end = sampler.at(tw), sampler.at(te)
    means = sampler.mean(tw, te)
    lag = {
        g: {"start": lag_start.get(g, 0), "end": lag_end.get(g, 0), "mean": means.get(g, 0.0), "peak": p}
        for g, p in sampler.peak(tw, te).items()
    }
    step = 5.0
    series = {
        "accepted": [0] * (int((te - tw) // step) + 1),
        "delivered": [0] * (int((te - tw) // step) + 1),
    }
    for n, e in load.accepted_events.items():
        if tw <= load.answered_at[n] < te:
            series["accepted"][int((load.answered_at[n] - tw) // step)] += e
    for t in times:
        if tw <= t < te:
            series["delivered"][int((t - tw) // step)] += 1
    return {
        "window_s": window,
        "per_5s": {k: [round(v / step) for v in vs[: int(window // step)]] for k, vs in series.items()},
        "accepted_events_per_s": accepted_in / window,
        "delivered_events_per_s": delivered_rate,
        "requests": {
            "sent": load.sent,
            "skipped": load.skipped,
            "statuses": dict(load.statuses),
            "errors": dict(load.errors),
            "failed_elements": load.failed_elements,
            "p50_ms": percentile(sorted(load.request_ms), 50),
            "p99_ms": percentile(sorted(load.request_ms), 99),
        },
        "accepted_total": sum(load.accepted_events.values()),
        "delivered_total": len(ids),
        "endpoint": stats,
        "latency_events": len(latencies),
        "latency_missing": expected - len(latencies),
        "latency_s": {
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
            "max": latencies[-1] if latencies else float("nan"),
            "mean": statistics.fmean(latencies) if latencies else float("nan"),
        },
        "cpu": cpu_use,
        "lag": lag,
        "lag_sampler_errors": sampler.errors,
        "narrowest": narrowest(cpu_use, lag, delivered_rate),
        "pipeline_us_per_event": pipeline_us,
        "pipeline_parts": parts,
        "cpu_ceiling_events_per_s": (os.cpu_count() or 1) * 1e6 / pipeline_us
        if pipeline_us
        else float("nan"),
    }


def stage_of(group: str) -> str:
    return "workers" if ".processors" in group else "sink" if ".streams." in group else f"readers of {group}"


def narrowest(cpu: dict[str, dict[str, float]], lag: dict[str, dict[str, float]], rate: float) -> str:
    """Where the queue builds, and which pipeline process costs the most CPU per event.

    A group whose lag grew by more than 2 s of traffic over the window cannot keep up: the stage reading
    it is the narrowest. Else (the pipeline kept up) the queue sits in front of the slowest stage: the
    group with the highest mean lag (with ``--max`` the backlog bound keeps the total queue constant, so
    it gathers there). The broker's CPU is reported, but it is not a stage of its own."""
    grew = {g: v["end"] - v["start"] for g, v in lag.items()}
    worst = max(grew, key=lambda g: grew[g], default=None)
    per_stage: dict[str, float] = {n: cpu[n]["us_per_event"] for n in ("gateway", "sink") if n in cpu}
    per_stage["workers"] = sum(v["us_per_event"] for n, v in cpu.items() if re.fullmatch(r"worker\d+", n))
    top = max(per_stage, key=lambda n: per_stage[n])
    by_cpu = f"highest CPU per event: {top} ({per_stage[top]:.1f} µs)"
    if worst is not None and grew[worst] > 2 * rate:
        return f"{stage_of(worst)}: {worst} fell {grew[worst]:,.0f} records further behind; {by_cpu}"
    queued = max(lag, key=lambda g: lag[g]["mean"], default=None)
    if queued is not None and lag[queued]["mean"] > 0:
        return (
            f"{stage_of(queued)}: the queue waits in {queued} (mean lag {lag[queued]['mean']:,.0f}); {by_cpu}"
        )
    return by_cpu


def drop_topics(kafka: KafkaSettings) -> None:
    admin = new_admin(kafka)
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(kafka.topic_prefix + ".")]
    if names:
        for f in admin.delete_topics(names, operation_timeout=0, request_timeout=30).values():
            f.exception()


# --- py-spy (optional) -----------------------------------------------------------------------------------
def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start_py_spy(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes] | None:
    exe = py_spy()
    if exe is None:
        print("py-spy is not installed: no worker profile (pip install py-spy in the venv for one)")
        return None
    argv = [exe, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "100", "--subprocesses"]
    argv += ["--gil", "--nonblocking", "--format", "raw", "--output", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=(out.with_suffix(".log")).open("wb"))


# Frames every sample of a worker passes through (CLI, event loop): left out of the inclusive list.
BOILERPLATE = {"main.py", "core.py", "runners.py", "base_events.py", "events.py", "cli.py", "<frozen runpy>"}


def summarize_py_spy(path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    if not path.exists():
        return {"error": f"no profile written ({path.with_suffix('.log')})"}
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_file: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r" \(([^)]*/)?(site-packages/)?", " (", f) for f in stack.split(";")]
        frames = [re.sub(r":\d+\)$", ")", f) for f in frames]
        own[frames[-1]] += n
        by_file[frames[-1].rpartition(" (")[2].rstrip(")")] += n
        for f in set(frames):
            if not f.startswith("process ") and f.rpartition(" (")[2].rstrip(")") not in BOILERPLATE:
                inclusive[f] += n
    return {
        "samples": total,
        "self": [(f, n / total) for f, n in own.most_common(top)] if total else [],
        "self_by_file": [(f, n / total) for f, n in by_file.most_common(top)] if total else [],
        "inclusive": [(f, n / total) for f, n in inclusive.most_common(top)] if total else [],
    }


# --- report ----------------------------------------------------------------------------------------------
def row(label: str, value: str) -> str:
    return f"| {label} | {value} |"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}"


def report(args: argparse.Namespace, r: dict[str, Any]) -> str:
    mode = (
        f"--rate {args.rate:g}"
        if args.rate
        else f"--max (concurrency {args.concurrency}, backlog {args.backlog})"
    )
    lat, req, raw = r["latency_s"], r["requests"], r["raw"]
    acc, dlv = r["accepted_events_per_s"], r["delivered_events_per_s"]
    lines = [
        f"## End to end, {mode}, {args.workers} worker(s), {args.seconds:g} s (warm-up {args.warmup:g} s)",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
        f"load average before {r['load_before']}, at the end of sending {r['load_during']}",
        f"request body {r['body_bytes']:,} bytes max: {USERS_PER_REQUEST} users x (1 customer + "
        f"{EVENTS_PER_USER} events) = {EVENTS_PER_REQUEST} events, {RECORDS_PER_REQUEST} records",
        "",
        "| measure | value |",
        "|---|---|",
        row(f"events/s accepted by the gateway (steady window {r['window_s']:.1f} s)", f"{acc:,.0f}"),
        row("**events/s delivered to the endpoint (steady window)**", f"**{dlv:,.0f}**"),
        row(
            "latency 200 → endpoint p50 / p95 / p99 / max",
            f"{ms(lat['p50'])} / {ms(lat['p95'])} / **{ms(lat['p99'])}** / {ms(lat['max'])} ms"
            f" ({r['latency_events']:,} events)",
        ),
        row("events of the window not delivered by the end of the drain", f"{r['latency_missing']:,}"),
        row("drain after the last request", f"{r['drain_s']:.1f} s"),
        row("accepted / delivered in total (unique)", f"{r['accepted_total']:,} / {r['delivered_total']:,}"),
        row("duplicates at the endpoint", f"{r['endpoint']['duplicates']:,}"),
        row(
            "requests sent / skipped (rate mode) / statuses / errors",
            f"{req['sent']:,} / {req['skipped']:,} / {req['statuses']} / {req['errors'] or 0}",
        ),
        row("gateway answer p50 / p99", f"{req['p50_ms']:.0f} / {req['p99_ms']:.0f} ms"),
        row(
            "raw baseline: the same messages, two bare Kafka hops",
            f"{raw['records_per_s']:,.0f} messages/s = {r['raw_events_per_s']:,.0f} events/s"
            f" ({raw['records']:,} messages, {raw.get('records_per_message', 1.0):.1f} records each)",
        ),
        row("delivered / raw", f"{dlv / r['raw_events_per_s']:.3f}"),
        row(
            "CPU per event, " + " + ".join(r["pipeline_parts"]),
            f"{r['pipeline_us_per_event']:.0f} µs: at most {r['cpu_ceiling_events_per_s']:,.0f} events/s"
            f" on {os.cpu_count()} cores if nothing else ran",
        ),
        "",
        "| process | CPU s in window | cores | µs per delivered event |",
        "|---|---:|---:|---:|",
    ]
    for name, v in r["cpu"].items():
        lines.append(f"| {name} | {v['cpu_s']:.1f} | {v['cores']:.2f} | {v['us_per_event']:.1f} |")
    m = r.get("machine") or {}
    if m:
        lines += [
            "",
            f"machine in the window: busy {m['busy_cores']:.2f} cores"
            f" (other processes {m['other_cores']:.2f}), idle {m['idle_cores']:.2f},"
            f" stolen by the hypervisor {m['steal_cores']:.2f}",
        ]
    lines += [
        "",
        "| consumer group | lag at start of window | at end | mean | peak |",
        "|---|---:|---:|---:|---:|",
    ]
    for g, v in sorted(r["lag"].items()):
        lines.append(
            f"| {g.removeprefix(r['prefix'] + '.')} | {v['start']:,} | {v['end']:,} | {v['mean']:,.0f}"
            f" | {v['peak']:,} |"
        )
    lines += [
        "",
        "events/s per 5 s of the window, accepted: " + ", ".join(f"{v:,}" for v in r["per_5s"]["accepted"]),
        "events/s per 5 s of the window, delivered: " + ", ".join(f"{v:,}" for v in r["per_5s"]["delivered"]),
        f"exit codes: {r['exit_codes']}",
        "",
        f"**Narrowest stage:** {r['narrowest']}",
    ]
    if "profile" in r:
        p = r["profile"]
        if "error" in p:
            lines += ["", f"worker profile: {p['error']}"]
        else:
            lines += ["", f"worker1 py-spy ({p['samples']:,} samples), self time:", ""]
            lines += [f"    {share * 100:5.1f}%  {f}" for f, share in p["self"][:15]]
            lines += ["", "self time by file:", ""]
            lines += [f"    {share * 100:5.1f}%  {f}" for f, share in p["self_by_file"][:12]]
            lines += ["", "inclusive:", ""]
            lines += [f"    {share * 100:5.1f}%  {f}" for f, share in p["inclusive"][:25]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument(
        "--max", action="store_true", help="as fast as the pipeline delivers (throughput; default)"
    )
    mode.add_argument("--rate", type=float, help="events/s, open loop (latency)")
    ap.add_argument("--seconds", type=float, default=30.0, help="sending time, warm-up included")
    ap.add_argument("--warmup", type=float, default=8.0, help="seconds excluded at the start")
    ap.add_argument("--workers", type=int, default=1, help="inflow worker processes")
    ap.add_argument("--users", type=int, default=20_000, help="distinct customer ids, used round-robin")
    ap.add_argument("--concurrency", type=int, default=4, help="--max: requests in flight")
    ap.add_argument(
        "--backlog", type=int, default=30_000, help="--max: accepted but undelivered events (0: no bound)"
    )
    ap.add_argument(
        "--max-inflight", type=int, default=64, help="--rate: pending requests before slots are skipped"
    )
    ap.add_argument(
        "--drain", type=float, default=30.0, help="seconds to wait for the last events after sending"
    )
    ap.add_argument("--start-timeout", type=float, default=180.0, help="seconds for the probe to go through")
    ap.add_argument("--raw-records", type=int, default=200_000, help="records in the raw baseline")
    ap.add_argument("--broker-pid", type=int, help="pid of an external broker, for its CPU")
    ap.add_argument("--profile-worker", type=int, default=0, help="py-spy the first worker for N s")
    ap.add_argument("--py-spy-out", type=Path, help="with --profile-worker: keep the raw stacks in this file")
    ap.add_argument("--keep-topics", action="store_true")
    ap.add_argument("--write", type=Path, help="append the report to this file")
    ap.add_argument("--json", type=Path, help="write all figures as JSON")
    args = ap.parse_args(argv)
    args.max = not args.rate
    if args.warmup >= args.seconds:
        ap.error("--warmup must be shorter than --seconds")
    work = Path(tempfile.mkdtemp(prefix="inflow-e2e-"))
    print(f"work dir {work} (component logs), load average {load_average()}", flush=True)
    try:
        result = run_pipeline(args, work)
    except BaseException:
        print(f"failed; component logs kept in {work}", file=sys.stderr)
        raise
    text = report(args, result)
    print(text)
    if args.write:
        with args.write.open("a") as f:
            f.write(text + "\n\n")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
