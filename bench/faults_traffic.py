"""Fault bench traffic: a counting Streams endpoint, a steady Bulk API load, hostile bodies, an import.

Every event the bench creates carries a tag (``fault_tag`` attribute: ``b<request>-<element>`` for Bulk API
events, ``i<row>`` for import rows), so an event is followed from the 200 answer that accepted it to the
endpoint (or the DLQ) whatever ``event_uuid`` the pipeline gave it.
"""

from __future__ import annotations

import asyncio
import base64
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import requests
from aiohttp import web

from inflow.local.process import free_port

BULK_EVENT = "FaultLoad"
IMPORT_EVENT = "FaultImport"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- the endpoint ----------------------------------------------------------------------------------------
class CountingEndpoint:
    """A Streams endpoint on 127.0.0.1: answers 503 while ``down``, else 200, and keeps for every event of a
    2xx answer its ``event_uuid`` and tag (copies counted, bodies not kept)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/ingest"
        self._lock = threading.Lock()
        self._down_until = 0.0
        self.copies: Counter[str] = Counter()  # event_uuid -> times delivered with a 2xx
        self.tag_of: dict[str, str | None] = {}
        self.requests_ok = 0
        self.requests_refused = 0
        self.events_refused = 0
        self.last_delivery = 0.0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._serve, name="faults-endpoint", daemon=True)

    def start(self) -> CountingEndpoint:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the endpoint did not start")
        return self

    def down_for(self, seconds: float) -> None:
        with self._lock:
            self._down_until = time.monotonic() + seconds

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    async def _handle(self, request: web.Request) -> web.Response:
        events = orjson.loads(await request.read())["events"]
        with self._lock:
            if time.monotonic() < self._down_until:
                self.requests_refused += 1
                self.events_refused += len(events)
                return web.json_response({"status": "fail"}, status=503)
            for e in events:
                uuid = e["event_uuid"]
                self.copies[uuid] += 1
                attrs = e.get("event_attributes") or {}
                self.tag_of[uuid] = attrs.get("fault_tag") if isinstance(attrs, dict) else None
            self.requests_ok += 1
            self.last_delivery = time.monotonic()
        return web.json_response({"status": "ok"})

    def delivered(self) -> tuple[Counter[str], dict[str, str | None]]:
        with self._lock:
            return Counter(self.copies), dict(self.tag_of)

    def delivered_tags(self) -> set[str]:
        with self._lock:
            return {t for t in self.tag_of.values() if t is not None}

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)


# --- the steady Bulk API load ---------------------------------------------------------------------------
@dataclass
class LoadStats:
    requests: int = 0
    retries: int = 0
    statuses: Counter[int] = field(default_factory=Counter)  # every answer, retries included
    errors: Counter[str] = field(default_factory=Counter)  # connection errors and timeouts
    given_up: int = 0  # requests never answered 200 within the retry window


class BulkLoad:
    """Bulk API requests of ``per_request`` events at ``rate`` events/s (paced, never bursting ahead).

    Each request carries an ``Idempotency-Key``, and a request that got no answer, a connection error or a
    503 is sent again with the same key (the same event_uuids) until it is answered 200 or ``retry_for``
    seconds passed: a client that cannot know whether its request was stored must retry, and the
    pipeline de-duplicates on event_uuid. Accepted events are the elements of 200 answers minus
    ``failed_elements``; events of requests never answered 200 are "unconfirmed".
    """

    def __init__(
        self,
        url: str,
        workspace: str,
        key: str,
        rate: float,
        per_request: int = 20,
        senders: int = 12,
        retry_for: float = 240.0,
        run_id: str = "",
    ) -> None:
        self.url = f"{url}/v1/transition/{workspace}"
        self.headers = {"Authorization": basic(workspace, key), "Content-Type": "application/json"}
        self.per_request = per_request
        self.interval = per_request / rate
        self.retry_for = retry_for
        self.run_id = run_id or f"{time.time_ns():x}"
        self.accepted: set[str] = set()
        self.unconfirmed: set[str] = set()
        self.stats = LoadStats()
        self._lock = threading.Lock()
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._stop = threading.Event()
        self._pacer = threading.Thread(target=self._pace, name="faults-pacer", daemon=True)
        self._senders = [
            threading.Thread(target=self._send_loop, name=f"faults-sender-{i}", daemon=True)
            for i in range(senders)
        ]
        self.sent_requests = 0
        self.skipped = 0

    def start(self) -> BulkLoad:
        for t in [self._pacer, *self._senders]:
            t.start()
        return self

    def _pace(self) -> None:
        started = time.monotonic()
        n = 0
        while not self._stop.is_set():
            due = started + n * self.interval
            now = time.monotonic()
            if due > now:
                self._stop.wait(due - now)
                continue
            if now - due > 1.0 or self._queue.qsize() > len(self._senders):
                # Behind (senders blocked by a fault or a slow gateway): skip slots, never burst later.
                self.skipped += int((now - started) / self.interval) + 1 - n
                n = int((now - started) / self.interval) + 1
                continue
            self._queue.put(n)
            self.sent_requests += 1
            n += 1

    def body(self, n: int) -> bytes:
        now = int(time.time())
        elements = [
            {
                "type": "event",
                "customer_id": f"c{(n * self.per_request + j) % 997}",
                "actions": [
                    {
                        "action": BULK_EVENT,
                        "attributes": {"fault_tag": f"b{n}-{j}", "n": n},
                        "current_time": now,
                    }
                ],
            }
            for j in range(self.per_request)
        ]
        return orjson.dumps({"type": "transition", "elements": elements})

    def _send_loop(self) -> None:
        session = requests.Session()
        while True:
            n = self._queue.get()
            if n is None:
                return
            self._send(session, n)

    def _send(self, session: requests.Session, n: int) -> None:
        data = self.body(n)
        headers = self.headers | {"Idempotency-Key": f"{self.run_id}-{n}"}
        tags = [f"b{n}-{j}" for j in range(self.per_request)]
        deadline = time.monotonic() + self.retry_for
        first = True
        while True:
            if not first:
                with self._lock:
                    self.stats.retries += 1
            first = False
            try:
                resp = session.post(self.url, data=data, headers=headers, timeout=30)
            except requests.RequestException as exc:
                with self._lock:
                    self.stats.errors[type(exc).__name__] += 1
                status = None
            else:
                status = resp.status_code
                with self._lock:
                    self.stats.statuses[status] += 1
                if status == 200:
                    failed = {f["index"] for f in resp.json().get("failed_elements", [])}
                    with self._lock:
                        self.stats.requests += 1
                        self.accepted.update(t for j, t in enumerate(tags) if j not in failed)
                    return
            if (status is not None and status not in (429, 503)) or time.monotonic() > deadline:
                with self._lock:
                    self.stats.requests += 1
                    self.stats.given_up += 1
                    self.unconfirmed.update(tags)
                return
            time.sleep(0.5)

    def stop(self, drain_timeout: float = 300.0) -> None:
        """Stop pacing; wait for the queued and in-flight requests (each ends within ``retry_for``)."""
        self._stop.set()
        self._pacer.join(10)
        while True:  # requests queued but never sent are not part of the load
            try:
                self._queue.get_nowait()
                self.sent_requests -= 1
            except queue.Empty:
                break
        for _ in self._senders:
            self._queue.put(None)
        deadline = time.monotonic() + drain_timeout
        for t in self._senders:
            t.join(max(0.1, deadline - time.monotonic()))

    def snapshot(self) -> tuple[set[str], set[str]]:
        with self._lock:
            return set(self.accepted), set(self.unconfirmed - self.accepted)


# --- hostile bodies -------------------------------------------------------------------------------------
def _bulk(elements: Any) -> bytes:
    return orjson.dumps({"type": "transition", "elements": elements})


def _event(tag: str, **attributes: Any) -> dict[str, Any]:
    return {
        "type": "event",
        "customer_id": f"h-{tag}",
        "actions": [{"action": BULK_EVENT, "attributes": {"fault_tag": tag, **attributes}}],
    }


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


# Each kind: name -> (body maker taking a unique tag, extra headers, "must be rejected with a 4xx").
# A body a strict MoEngage parser accepts (nesting within the parser's depth, an integer within 64 bits)
# may be answered 200; its event is then accepted and must be delivered like any other.
HostileKind = tuple[Callable[[str], bytes], dict[str, str], bool]
HOSTILE: dict[str, HostileKind] = {
    "nested-arrays-45k": (
        lambda t: b'{"type":"transition","elements":' + b"[" * 45_000 + b"]" * 45_000 + b"}",
        {},
        True,
    ),
    "nested-objects-20k": (
        lambda t: b'{"type":"transition","elements":[' + b'{"a":' * 20_000 + b"1" + b"}" * 20_000 + b"]}",
        {},
        True,
    ),
    "nested-attributes-200": (lambda t: _bulk([_event(t, deep=_nested(200))]), {}, False),
    "huge-integer-5000-digits": (
        lambda t: _bulk([]).replace(
            b"[]",
            b'[{"type":"event","customer_id":"x","actions":[{"action":"a","attributes":{"n":'
            + b"9" * 5000
            + b"}}]}]",
        ),
        {},
        True,
    ),
    "integer-2**64-1-user-time": (
        lambda t: _bulk(
            [
                {
                    "type": "event",
                    "customer_id": f"h-{t}",
                    "actions": [
                        {"action": BULK_EVENT, "attributes": {"fault_tag": t}, "user_time": 2**64 - 1}
                    ],
                }
            ]
        ),
        {},
        False,
    ),
    "integer-2**63-attribute": (lambda t: _bulk([_event(t, big=2**63, small=-(2**63))]), {}, False),
    "float-1e400": (
        lambda t: _bulk([]).replace(
            b"[]", b'[{"type":"event","customer_id":"x","actions":[{"action":"a","attributes":{"f":1e400}}]}]'
        ),
        {},
        True,
    ),
    "invalid-utf8": (
        lambda t: (
            b'{"type":"transition","elements":[{"type":"event","customer_id":"\xff\xfe\xc0\xaf","actions":[{"action":"a"}]}]}'
        ),
        {},
        True,
    ),
    "lone-surrogate": (
        lambda t: (
            b'{"type":"transition","elements":[{"type":"event","customer_id":"\\ud800","actions":[{"action":"a"}]}]}'
        ),
        {},
        True,
    ),
    "oversized-150kb": (lambda t: _bulk([_event(t, pad="x" * 150_000)]), {}, True),
    "oversized-2mb": (lambda t: b'{"type":"transition","elements":["' + b"y" * 2_000_000 + b'"]}', {}, True),
    "wrong-key-elementz": (lambda t: orjson.dumps({"type": "transition", "elementz": [_event(t)]}), {}, True),
    "wrong-element-type": (
        lambda t: _bulk([{"type": "evnt", "customer_id": "x", "actions": [{"action": "a"}]}]),
        {},
        True,
    ),
    "wrong-key-customerid": (
        lambda t: _bulk([{"type": "event", "customerid": "x", "actions": [{"action": "a"}]}]),
        {},
        True,
    ),
    "actions-not-a-list": (
        lambda t: _bulk([{"type": "event", "customer_id": "x", "actions": {"action": "a"}}]),
        {},
        True,
    ),
    "elements-not-a-list": (lambda t: orjson.dumps({"type": "transition", "elements": "x"}), {}, True),
    "body-is-a-list": (lambda t: b"[1,2,3]", {}, True),
    "nan": (
        lambda t: (
            b'{"type":"transition","elements":[{"type":"event","customer_id":"x","actions":[{"action":"a","attributes":{"n":NaN}}]}]}'
        ),
        {},
        True,
    ),
    "truncated": (lambda t: _bulk([_event(t)])[:-7], {}, True),
    "empty-body": (lambda t: b"", {}, True),
    "wrong-content-type": (lambda t: _bulk([_event(t)]), {"Content-Type": "text/plain"}, True),
    "wrong-api-key": (lambda t: _bulk([_event(t)]), {"Authorization": basic("FAULTS", "not-the-key")}, True),
}
HOSTILE_5XX_ALLOWED: frozenset[int] = frozenset()


@dataclass
class HostileResult:
    kind: str
    status: int | None  # None: no answer (connection error or 30 s timeout, a hang)
    json_error: bool
    note: str = ""


class HostileStorm:
    """Sends every hostile kind in turn at ``rate`` requests/s beside the good load; keeps every answer."""

    def __init__(self, url: str, workspace: str, key: str, rate: float = 5.0) -> None:
        self.url = f"{url}/v1/transition/{workspace}"
        self.headers = {"Authorization": basic(workspace, key), "Content-Type": "application/json"}
        self.interval = 1.0 / rate
        self.results: list[HostileResult] = []
        self.accepted: set[str] = set()  # tags of hostile-but-valid events answered 200
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faults-hostile", daemon=True)

    def start(self) -> HostileStorm:
        self._thread.start()
        return self

    def _run(self) -> None:
        session = requests.Session()
        kinds = list(HOSTILE.items())
        n = 0
        while not self._stop.is_set():
            name, (make, extra, _) = kinds[n % len(kinds)]
            tag = f"h{n}"
            self.results.append(self._one(session, name, make(tag), self.headers | extra, tag))
            n += 1
            self._stop.wait(self.interval)

    def _one(
        self, session: requests.Session, name: str, data: bytes, headers: dict[str, str], tag: str
    ) -> HostileResult:
        try:
            resp = session.post(self.url, data=data, headers=headers, timeout=30)
        except requests.RequestException as exc:
            session.close()
            return HostileResult(name, None, False, type(exc).__name__)
        try:
            body = resp.json()
            json_error = body.get("status") == "fail" and isinstance(body.get("error"), dict)
        except ValueError:
            body, json_error = None, False
        if resp.status_code == 200:
            self.accepted.add(tag)
        return HostileResult(name, resp.status_code, json_error, resp.text[:200] if not json_error else "")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def verdicts(self) -> dict[str, dict[str, Any]]:
        """Per kind: requests, answers by status, and bad answers (5xx, no answer, non-JSON 4xx, a 2xx for a
        body that must be rejected)."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.results:
            must_reject = HOSTILE[r.kind][2]
            v = out.setdefault(r.kind, {"requests": 0, "statuses": Counter(), "bad": []})
            v["requests"] += 1
            v["statuses"][r.status] += 1
            bad = (
                r.status is None
                or r.status >= 500
                or (400 <= r.status < 500 and not r.json_error)
                or (must_reject and r.status < 400)
            )
            if bad:
                v["bad"].append(f"{r.status} {r.note}".strip())
        return out


# --- the import file ------------------------------------------------------------------------------------
IMPORT_MAPPINGS = [
    {"column": "user", "moe_attr": "uid"},
    {
        "column": "time",
        "moe_attr": "event_time",
        "type": "datetime",
        "datetime_format": "YYYY-MM-DDThh:mm:ssTZD",
    },
    {"column": "tag", "moe_attr": "fault_tag"},
]


def import_csv(rows: int) -> bytes:
    """An events CSV whose row ``r`` (1-based) is tagged ``i<r>``."""
    at = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = ["user,time,tag"] + [f"c{r % 997},{at},i{r}" for r in range(1, rows + 1)]
    return ("\n".join(lines) + "\n").encode()


def import_definition(name: str, bucket: str, folder: str, s3: Any) -> dict[str, Any]:
    return {
        "name": name,
        "workspace_id": "FAULTS",
        "type": "events",
        "event_name": IMPORT_EVENT,
        "bucket": bucket,
        "folder": folder,
        "access_key": s3.access_key_id,
        "secret_key": s3.secret_access_key.get_secret_value(),
        "endpoint_url": str(s3.endpoint_url),
        "date_format": "yyyymmdd",
        "mappings": IMPORT_MAPPINGS,
    }


IMPORT_FILE = f"{IMPORT_EVENT}_20240101.csv"
