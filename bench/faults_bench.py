"""Fault tests with exact counts: the whole pipeline under load, one fault, then an exact reconciliation.

    .venv/bin/python -m bench.faults_bench [--scenario NAME|all] [--quick] [--rate 300]

Starts a private broker and S3 server (free ports, a temporary folder), and per scenario a fresh topic
prefix, a counting Streams endpoint on 127.0.0.1, and the four components as processes (``inflow gateway``,
``poller``, ``worker``, ``sink``). A steady load of Bulk API requests (``--rate`` events/s, twenty events per
request, an Idempotency-Key each, resent with the same key after a connection error or a 503) runs while
one import file is imported; the fault is applied mid-load; then the bench waits (deadlines, no fixed sleeps
for correctness) until every accepted event is delivered or in the DLQ, and reconciles:

* accepted: events of 200 answers (minus ``failed_elements``) and the rows of the import file;
* delivered: distinct event_uuids the endpoint answered 2xx for; copies beyond one are the duplicates that
  de-duplication on event_uuid removes;
* in the DLQ: events of the stream's dead batches, with the reason of their last attempt;
* missing: accepted events neither delivered nor in the DLQ (must be 0);
* split: accepted events delivered under two different event_uuids (de-duplication cannot remove those;
  must be 0).

Scenarios: kill-gateway, kill-poller, kill-worker, kill-sink (SIGKILL mid-load, restart), broker-restart
(stop and start the broker on the same data dir), endpoint-down-2min (503 for 120 s, ``--quick``: 20 s with
retry delays 2/4/8 s so the first batches reach the DLQ), hostile-storm (hostile bodies beside the good
load: each must get a 4xx JSON error, never a 5xx or no answer). Exit status 1 when any event is missing,
split, or a hostile request got a bad answer.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition

from bench.faults_pipeline import KEY, STREAM_ID, WS, Pipeline, PipelineOptions, Services, wait_until
from bench.faults_traffic import (
    IMPORT_FILE,
    BulkLoad,
    CountingEndpoint,
    HostileStorm,
    import_csv,
    import_definition,
)
from inflow.kafka.clients import new_consumer, topic_partitions, watermarks
from inflow.schemas.serde import AvroSerde
from inflow.sinks.streams.dlq import read_dlq


@dataclass
class Run:
    """What a fault needs while it runs: the pipeline, the endpoint, the scenario's clock and notes."""

    pipeline: Pipeline
    endpoint: CountingEndpoint
    import_name: str
    import_rows: int
    started: float
    notes: list[str] = field(default_factory=list)
    import_error: str = ""
    died: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)  # held while a fault kills and restarts

    def note(self, text: str) -> None:
        self.notes.append(f"t+{time.monotonic() - self.started:5.1f}s {text}")


Fault = Callable[[Run], None]


def supervise(run: Run, stop: threading.Event) -> None:
    """A component that exits on its own did not recover from the fault: record it (with its last log
    line) and start it again, as a process supervisor would, so the reconciliation still counts exactly."""
    while not stop.wait(1.0):
        with run.lock:
            for name, component in run.pipeline.components.items():
                if component.proc is None or component.alive:
                    continue
                code = component.proc.returncode
                component.exit_codes.append(code)
                lines = [
                    ln for ln in component.log_text().splitlines() if ln.strip() and not ln.startswith("%")
                ]
                last = lines[-1][:300] if lines else ""
                run.died.append(f"{name} exited {code} on its own: {last}")
                run.note(f"DID NOT RECOVER: {name} exited {code} ({last}); started again")
                component.start()


def kill_and_restart(name: str) -> Fault:
    def fault(run: Run) -> None:
        component = run.pipeline.components[name]
        pid = component.proc.pid if component.proc else None
        with run.lock:
            if not component.alive:
                raise RuntimeError(f"{name} was not running before the kill:\n{component.log_text()[-2000:]}")
            component.kill()
            run.note(f"SIGKILL {name} (pid {pid})")
            component.start()
        run.note(f"{name} restarted (pid {component.proc.pid if component.proc else None})")
        if name == "gateway":
            wait_until(run.pipeline.gateway_healthy, 180, "the restarted gateway")
            run.note("gateway healthy again")

    return fault


def ingest_events_high(run: Run, consumer: Any, partitions: list[int]) -> int:
    topic = run.pipeline.kafka.topic("ingest.records")
    return sum(watermarks(consumer, TopicPartition(topic, p))[1] for p in partitions)


def kill_poller_mid_file(run: Run) -> None:
    """SIGKILL the poller once the import has written a tenth of its rows, then restart it."""
    poller = run.pipeline.components["poller"]
    consumer = new_consumer(run.pipeline.kafka, f"faults-watch-{uuid.uuid4().hex[:6]}")
    try:
        partitions = topic_partitions(consumer, run.pipeline.kafka.topic("ingest.records"))
        started_line = f"import {run.import_name}: {IMPORT_FILE}:"
        wait_until(
            lambda: started_line in poller.log_text(), 240, "the poller to start the import file", 0.05
        )
        base = ingest_events_high(run, consumer, partitions)
        run.note(f"poller started the file; ingest.records high watermark {base}")
        wanted = max(2_000, run.import_rows // 10)
        wait_until(
            lambda: ingest_events_high(run, consumer, partitions) - base >= wanted,
            120,
            f"{wanted} import rows on ingest.records",
            0.05,
        )
    finally:
        consumer.close()
    kill_and_restart("poller")(run)
    done_line = f"import {run.import_name}: {IMPORT_FILE} "
    first_part = poller.log_text().rsplit("=== start", 1)[0]
    run.note("the kill came mid-file" if done_line not in first_part else "the file was done before the kill")


def restart_broker(down_s: float) -> Fault:
    def fault(run: Run) -> None:
        kafka = run.pipeline.services.kafka
        if kafka is None:
            raise RuntimeError("broker-restart needs the bench's own broker")
        kafka.stop()
        run.note("broker stopped (SIGTERM, same data dir)")
        time.sleep(down_s)  # the length of the outage is the fault itself, not a wait for a condition
        kafka.start()
        run.note(f"broker started again after {down_s:.0f}s down")

    return fault


def endpoint_down(seconds: float) -> Fault:
    def fault(run: Run) -> None:
        run.endpoint.down_for(seconds)
        run.note(f"endpoint answers 503 for {seconds:.0f}s")

    return fault


@dataclass
class Scenario:
    name: str
    faults: list[tuple[float, Fault]]  # (seconds after the pipeline delivers its first event, fault)
    load_s: float = 60.0
    import_at_s: float = 5.0
    import_rows: int = 20_000
    hostile: bool = False
    retry_delays_s: tuple[float, ...] = (30.0, 60.0, 120.0)
    settle_s: float = 300.0


def scenarios(quick: bool) -> dict[str, Scenario]:
    load, at = (40.0, 15.0) if quick else (90.0, 30.0)
    down = 20.0 if quick else 120.0
    delays = (2.0, 4.0, 8.0) if quick else (30.0, 60.0, 120.0)
    rows = 10_000 if quick else 20_000
    big = 100_000 if quick else 200_000
    return {
        "kill-gateway": Scenario("kill-gateway", [(at, kill_and_restart("gateway"))], load, import_rows=rows),
        "kill-poller": Scenario(
            "kill-poller", [(at, kill_poller_mid_file)], load, import_at_s=at, import_rows=big
        ),
        "kill-worker": Scenario("kill-worker", [(at, kill_and_restart("worker"))], load, import_rows=rows),
        "kill-sink": Scenario("kill-sink", [(at, kill_and_restart("sink"))], load, import_rows=rows),
        "broker-restart": Scenario(
            "broker-restart", [(at, restart_broker(10.0))], load, import_rows=rows, settle_s=420.0
        ),
        "endpoint-down-2min": Scenario(
            "endpoint-down-2min",
            [(at, endpoint_down(down))],
            load,
            import_rows=rows,
            retry_delays_s=delays,
            settle_s=down + sum(delays) + 300.0,
        ),
        "hostile-storm": Scenario("hostile-storm", [], load, import_rows=rows, hostile=True),
    }


@dataclass
class Result:
    scenario: str
    accepted_bulk: int = 0
    accepted_import: int = 0
    accepted_hostile: int = 0
    delivered: int = 0  # distinct event_uuids of accepted events delivered
    deliveries: int = 0  # events received with a 2xx, copies included (all events)
    duplicates: int = 0  # copies removed by de-duplication on event_uuid
    in_dlq: int = 0
    dlq_reasons: Counter[str] = field(default_factory=Counter)
    missing: list[str] = field(default_factory=list)
    split: list[str] = field(default_factory=list)
    refused: tuple[int, int] = (0, 0)  # requests and events the endpoint answered 503
    unconfirmed: int = 0
    unconfirmed_delivered: int = 0
    untagged: int = 0
    import_status: str = ""
    load: dict[str, Any] = field(default_factory=dict)
    hostile: dict[str, dict[str, Any]] = field(default_factory=dict)
    hostile_bad: int = 0
    exit_codes: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    died: list[str] = field(default_factory=list)  # components that exited on their own
    settle_s: float = 0.0
    error: str = ""

    @property
    def accepted(self) -> int:
        return self.accepted_bulk + self.accepted_import + self.accepted_hostile

    @property
    def ok(self) -> bool:
        return not (self.error or self.missing or self.split or self.hostile_bad or self.died)


def import_status(pipeline: Pipeline, name: str) -> str | None:
    """SUCCESSFUL / PARTIAL_SUCCESS / FAILED from the poller's completion line of the file, else None."""
    marker = f"import {name}: {IMPORT_FILE} "
    for line in reversed(pipeline.components["poller"].log_text().splitlines()):
        if marker in line:
            return line.split(marker, 1)[1].split(":", 1)[0]
    return None


def dlq_events(pipeline: Pipeline) -> dict[str, tuple[str | None, str]]:
    """event_uuid -> (tag, reason of the last attempt) for every event of the stream's dead batches."""
    out: dict[str, tuple[str | None, str]] = {}
    for batch in read_dlq(pipeline.kafka, AvroSerde(), STREAM_ID, timeout=60):
        last = batch.record["attempts"][-1] if batch.record["attempts"] else {}
        reason = f"{last.get('status')} {last.get('error', '')}".strip()
        for e in json.loads(batch.record["events_json"] or "[]"):
            attrs = e.get("event_attributes") or {}
            out[e["event_uuid"]] = (attrs.get("fault_tag"), reason)
    return out


def reconcile(
    result: Result,
    accepted: set[str],
    unconfirmed: set[str],
    endpoint: CountingEndpoint,
    dead: dict[str, tuple[str | None, str]],
) -> None:
    copies, tag_of = endpoint.delivered()
    uuids_of: dict[str, set[str]] = {}
    for event_uuid, tag in tag_of.items():
        if tag is None:
            result.untagged += 1
        else:
            uuids_of.setdefault(tag, set()).add(event_uuid)
    dead_tags: dict[str, str] = {tag: reason for tag, reason in dead.values() if tag is not None}
    result.deliveries = sum(copies.values())
    result.duplicates = result.deliveries - len(copies)
    result.delivered = sum(1 for t in accepted if t in uuids_of)
    result.in_dlq = sum(1 for t in accepted if t in dead_tags and t not in uuids_of)
    result.dlq_reasons = Counter(dead_tags[t] for t in accepted if t in dead_tags and t not in uuids_of)
    result.missing = sorted(t for t in accepted if t not in uuids_of and t not in dead_tags)
    result.split = sorted(t for t, uuids in uuids_of.items() if len(uuids) > 1)
    result.refused = (endpoint.requests_refused, endpoint.events_refused)
    result.unconfirmed = len(unconfirmed)
    result.unconfirmed_delivered = sum(1 for t in unconfirmed if t in uuids_of)


def run_scenario(
    services: Services, scenario: Scenario, workroot: Path, rate: float, log: Callable[[str], None] = print
) -> Result:
    result = Result(scenario.name)
    prefix = f"f{uuid.uuid4().hex[:8]}"
    endpoint = CountingEndpoint().start()
    options = PipelineOptions(retry_delays_s=scenario.retry_delays_s)
    pipeline = Pipeline(services, prefix, workroot / scenario.name, endpoint.url, options)
    import_name = f"faults-{prefix}"
    load: BulkLoad | None = None
    storm: HostileStorm | None = None
    started = time.monotonic()
    run = Run(pipeline, endpoint, import_name, scenario.import_rows, started)
    supervisor_stop = threading.Event()
    supervisor: threading.Thread | None = None
    try:
        pipeline.create()
        pipeline.s3_client().put_object(
            Bucket=pipeline.bucket, Key=f"imports/{IMPORT_FILE}", Body=import_csv(scenario.import_rows)
        )
        pipeline.start()
        log(f"[{scenario.name}] components started (prefix {prefix}, logs in {pipeline.workdir})")
        run.note("components started, gateway healthy")
        supervisor = threading.Thread(target=supervise, args=(run, supervisor_stop), daemon=True)
        supervisor.start()
        load = BulkLoad(pipeline.gateway_url, WS, KEY, rate, run_id=prefix).start()
        wait_until(endpoint.delivered_tags, 300, "the first event at the endpoint", 0.5)
        run.note("first event delivered: the scenario's clock starts")
        run.started = t0 = time.monotonic()
        if scenario.hostile:
            storm = HostileStorm(pipeline.gateway_url, WS, KEY).start()
        # ``inflow imports add`` runs beside the faults: its process start must not delay them.
        adder = threading.Thread(target=add_import, args=(run, services, t0 + scenario.import_at_s))
        adder.start()
        for at, step in sorted(scenario.faults, key=lambda s: s[0]):
            delay = t0 + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the schedule of the scenario, not a wait for correctness
            step(run)
        delay = t0 + scenario.load_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if storm is not None:
            storm.stop()
        load.stop()
        run.note(f"load stopped: {load.sent_requests} requests sent, {load.skipped} pacing slots skipped")
        adder.join(400)
        if run.import_error:
            raise RuntimeError(f"the import could not be added: {run.import_error}")
        settle_from = time.monotonic()
        try:
            status = wait_until(lambda: import_status(pipeline, import_name), 300, "the import run", 1.0)
        except TimeoutError:
            # Not a reason to stop counting: the Bulk API events are still reconciled exactly.
            status = "NEVER RAN"
            run.died.append("poller: the import file was not imported within 300 s of the end of the load")
            run.note("DID NOT RECOVER: the import file was never imported")
        result.import_status = status
        accepted_bulk, unconfirmed = load.snapshot()
        accepted_import = (
            {f"i{r}" for r in range(1, scenario.import_rows + 1)} if status == "SUCCESSFUL" else set()
        )
        accepted_hostile = storm.accepted if storm is not None else set()
        accepted = accepted_bulk | accepted_import | accepted_hostile
        result.accepted_bulk, result.accepted_import = len(accepted_bulk), len(accepted_import)
        result.accepted_hostile = len(accepted_hostile)
        dead: dict[str, tuple[str | None, str]] = {}
        last_dlq = [0.0]

        def accounted() -> bool:
            have = endpoint.delivered_tags()
            if accepted <= have:
                return True
            if time.monotonic() - last_dlq[0] > 10:  # reading the DLQ topic whole is not free
                last_dlq[0] = time.monotonic()
                dead.clear()
                dead.update(dlq_events(pipeline))
            return accepted <= have | {t for t, _ in dead.values() if t is not None}

        try:
            wait_until(accounted, scenario.settle_s, "every accepted event delivered or in the DLQ", 1.0)
        except TimeoutError as exc:
            result.error = str(exc)
        # Late copies (a replayed batch) still count as duplicates: wait until the endpoint is quiet.
        wait_until(lambda: time.monotonic() - endpoint.last_delivery > 5, 120, "a quiet endpoint", 0.5)
        result.settle_s = time.monotonic() - settle_from
        dead = dlq_events(pipeline)
        reconcile(result, accepted, unconfirmed, endpoint, dead)
        result.load = {
            "requests": load.stats.requests,
            "retries": load.stats.retries,
            "statuses": dict(load.stats.statuses),
            "errors": dict(load.stats.errors),
            "given_up": load.stats.given_up,
        }
        if storm is not None:
            result.hostile = storm.verdicts()
            result.hostile_bad = sum(len(v["bad"]) for v in result.hostile.values())
    except Exception as exc:  # noqa: BLE001 - a scenario that breaks is reported, the others still run
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        supervisor_stop.set()
        if supervisor is not None:
            supervisor.join(60)  # before the SIGTERMs, so a clean stop is never taken for a death
        result.died = run.died
        if storm is not None:
            storm.stop()
        if load is not None:
            load.stop(drain_timeout=5)
        codes = pipeline.stop()
        for name, component in pipeline.components.items():
            result.exit_codes[name] = list(component.exit_codes)
            if codes.get(name) not in (0, None):
                run.note(f"{name} exited {codes[name]} on SIGTERM")
        endpoint.stop()
        try:
            pipeline.drop_topics()
        except Exception as exc:  # noqa: BLE001 - clean-up only
            run.note(f"dropping topics failed: {exc}")
        run.note("pipeline stopped")
        result.notes = run.notes
    return result


def add_import(run: Run, services: Services, at: float) -> None:
    """``inflow imports add`` at ``at``; an operator retries it when it fails (e.g. the broker is down)."""
    delay = at - time.monotonic()
    if delay > 0:
        time.sleep(delay)  # the schedule of the scenario
    definition = import_definition(run.import_name, run.pipeline.bucket, "imports", services.s3)
    deadline = time.monotonic() + 300
    while True:
        try:
            run.pipeline.add_import(definition)
        except RuntimeError as exc:
            run.note(f"imports add failed, retried: {str(exc).splitlines()[0][:160]}")
            if time.monotonic() > deadline:
                run.import_error = str(exc)
                return
            time.sleep(2)
            continue
        run.note(f"import {run.import_name} added ({run.import_rows} rows)")
        return


def table(results: list[Result]) -> str:
    head = (
        "| scenario | accepted (bulk + import + hostile) | delivered | deliveries | duplicates removed "
        "| in DLQ | missing | split | unconfirmed (delivered) | settle s | result |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in results:
        lines.append(
            f"| {r.scenario} | {r.accepted:,} ({r.accepted_bulk:,} + {r.accepted_import:,} + "
            f"{r.accepted_hostile:,}) | {r.delivered:,} | {r.deliveries:,} | {r.duplicates:,} | {r.in_dlq:,} "
            f"| {len(r.missing):,} | {len(r.split):,} | {r.unconfirmed:,} ({r.unconfirmed_delivered:,}) "
            f"| {r.settle_s:.0f} | {'OK' if r.ok else 'FAIL'} |"
        )
    return "\n".join(lines)


def details(r: Result) -> str:
    out = [f"## {r.scenario}", *(f"  {n}" for n in r.notes)]
    out.append(f"  import: {r.import_status or '-'}; load: {json.dumps(r.load)}")
    if r.refused[0]:
        out.append(f"  endpoint answered 503 to {r.refused[0]} requests ({r.refused[1]} events)")
    if r.dlq_reasons:
        out.append(f"  DLQ reasons: {dict(r.dlq_reasons)}")
    if r.untagged:
        out.append(f"  events without a tag at the endpoint: {r.untagged}")
    out.append(f"  exit codes (kills, then the final SIGTERM): {r.exit_codes}")
    for kind, v in r.hostile.items():
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(v["statuses"].items(), key=str))
        bad = f" BAD: {v['bad'][:3]}" if v["bad"] else ""
        out.append(f"  hostile {kind}: {v['requests']} requests ({statuses}){bad}")
    if r.missing:
        out.append(f"  MISSING ({len(r.missing)}): {r.missing[:20]}")
    if r.split:
        out.append(f"  SPLIT ({len(r.split)}): {r.split[:20]}")
    for died in r.died:
        out.append(f"  DID NOT RECOVER: {died}")
    if r.error:
        out.append(f"  ERROR: {r.error}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", default="all", help="scenario names (comma-separated) or all")
    parser.add_argument("--quick", action="store_true", help="shorter load, a 20 s endpoint outage")
    parser.add_argument("--rate", type=float, default=300.0, help="Bulk API events/s of the steady load")
    parser.add_argument("--workdir", type=Path, default=None, help="keep broker data and logs here")
    args = parser.parse_args(argv)
    chosen = scenarios(args.quick)
    names = list(chosen) if args.scenario == "all" else args.scenario.split(",")
    unknown = [n for n in names if n not in chosen]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; one of {', '.join(chosen)} or all")
    workroot = args.workdir or Path(tempfile.mkdtemp(prefix="inflow-faults-"))
    print(
        f"fault bench {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}: {', '.join(names)}; "
        f"quick={args.quick} rate={args.rate:g}/s; work dir {workroot}"
    )
    services = Services.start(workroot / "services")
    results = []
    try:
        for name in names:
            began = time.monotonic()
            result = run_scenario(services, chosen[name], workroot, args.rate)
            results.append(result)
            print(details(result))
            print(f"  ({time.monotonic() - began:.0f}s)\n" + table([result]), flush=True)
    finally:
        services.stop()
    print("\n" + table(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
