"""Identifier backfill: when an identifier is switched on for a workspace, the profiles already stored are
indexed by it, and users that share a value merge (MoEngage: "Existing users merge over 48 h after
activation", §2.8).

Each partition of ``ingest.records`` backfills its own users. Between the lane's batches it scans its
users database in key order, a bounded number of profiles per step (``INFLOW_WORKER_BACKFILL_BATCH``), and
for each profile that holds a value of the newly active identifier (its attribute, or the standard key it
is stored under: ``email`` as ``u_em``) and has not claimed it yet, it does what a record carrying that
value would do: the value becomes one of the profile's identifiers and is **claimed** at the value's
partition (``CLAIM``, applied at once when the value lives on this partition). A value another user holds
is then a merge, carried out by the usual ``SHIP`` / ``CARRY`` / ``REPOINT`` messages (``docs/IDENTITY.md``),
so the retained user, the merge events, the 50-users cap and racing merges are exactly those of live
traffic.

Progress is state of the partition: a key of its identity table (``META_PREFIX`` + partition) holds the
identifiers it has indexed per workspace and, per running job, the last profile key scanned. It is written
with the step's other state changes, after the step's outputs (claims, snapshots) are on the broker
(``processors.lane``), so a restart or a rebalance resumes the scan where the last committed step ended;
a step replayed after a crash claims again, which changes nothing. When a growth of ``ingest.records``
moves profiles onto a partition, its scans start again from the first profile (:func:`scan_again`).
Progress is also announced on the compacted ``control.backfill`` topic (key
``<workspace>|<identifier>|<partition>``, JSON), which ``inflow identity backfill status`` reads, and on the
worker's Prometheus gauges.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from inflow.observability import worker_metrics as wm
from inflow.processors import jsoncodec, keys, protocol
from inflow.processors.engine import LaneProcessor, is_pointer
from inflow.processors.exceptions import Rejection
from inflow.processors.identity import as_identifier
from inflow.processors.outputs import Output
from inflow.processors.requests import is_erased
from inflow.processors.state import State
from inflow.processors.workspaces import CUSTOMER_ID, IdentityRules

META_PREFIX = b"\x00inflow\x00backfill\x00"
BACKFILL = "control.backfill"  # catalogue short name of the progress topic
RECORD_NAME = "BackfillProgress"  # JSON on control.backfill, not an Avro record
DEFAULT_BATCH = 500
RECONCILE_S = 1.0  # how often a partition compares the workspaces' identifiers with what it indexed


def meta_key(partition: int) -> bytes:
    """Where a partition keeps its backfill state (a NUL-led key: never a workspace's, never moved)."""
    return META_PREFIX + str(partition).encode()


def progress_key(workspace_id: str, name: str, partition: int) -> bytes:
    return f"{workspace_id}|{name}|{partition}".encode()


@dataclass
class Backfill:
    """Backfill jobs of the partitions this worker owns, one bounded step at a time."""

    processor: LaneProcessor
    workspaces: Callable[[], Iterable[str]]
    batch: int = DEFAULT_BATCH
    step_interval_s: float = 0.0  # a pause between two steps of one partition (0: every lane loop)
    clock: Callable[[], float] = time.monotonic
    _reconciled: dict[int, float] = field(default_factory=dict)
    _stepped: dict[int, float] = field(default_factory=dict)
    _running: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # partition -> jobs (gauges)

    def due(self, partitions: Iterable[int]) -> list[int]:
        """The partitions with a step to take now: a running job, or a reconcile that is due."""
        now = self.clock()
        found = []
        for partition in partitions:
            if now - self._reconciled.get(partition, -RECONCILE_S) >= RECONCILE_S:
                found.append(partition)
            elif (
                self._running.get(partition)
                and now - self._stepped.get(partition, 0.0) >= self.step_interval_s
            ):
                found.append(partition)
        return found

    def forget(self, partition: int) -> None:
        """The partition was revoked: its jobs go on wherever it is assigned next."""
        self._reconciled.pop(partition, None)
        self._stepped.pop(partition, None)
        self._running.pop(partition, None)
        self._gauges()

    def step(self, partition: int) -> list[Output]:
        """Reconcile the partition's jobs with the workspaces' identifiers (when due), then scan one batch of
        the first job. The processor is set to ``partition`` and its state to the partition's databases."""
        now = self.clock()
        state = self.processor.state
        stored = state.identity.get(meta_key(partition))
        meta = _meta(stored)
        outputs: list[Output] = []
        if now - self._reconciled.get(partition, -RECONCILE_S) >= RECONCILE_S:
            self._reconciled[partition] = now
            outputs += self._reconcile(partition, meta)
        if meta["jobs"]:
            self._stepped[partition] = now
            outputs += self._scan(partition, meta, meta["jobs"][0])
        if meta != _meta(stored):  # an idle partition writes nothing
            state.identity.put(meta_key(partition), meta)
        self._running[partition] = [(job["ws"], job["name"]) for job in meta["jobs"]]
        self._gauges()
        return outputs

    # -- jobs ----------------------------------------------------------------------------------------

    def _reconcile(self, partition: int, meta: dict[str, Any]) -> list[Output]:
        """A job for every identifier active now and not indexed here yet; an identifier switched off is
        forgotten (switched on again, it is backfilled again)."""
        outputs = []
        for ws in sorted(set(self.workspaces())):
            active = [n for n in self.processor.directory.rules(ws).identifiers if n != CUSTOMER_ID]
            known = meta["known"].get(ws, [])
            if active == known:
                continue
            for name in active:
                if name not in known:
                    job = {"ws": ws, "name": name, "after": None, "scanned": 0, "claimed": 0}
                    job["started"] = _now_ms()
                    meta["jobs"].append(job)
                    outputs.append(_progress(partition, job, done=False))
            meta["jobs"] = [j for j in meta["jobs"] if j["ws"] != ws or j["name"] in active]
            if active:
                meta["known"][ws] = active
            else:
                meta["known"].pop(ws, None)
        return outputs

    def _scan(self, partition: int, meta: dict[str, Any], job: dict[str, Any]) -> list[Output]:
        ws, name = job["ws"], job["name"]
        rules = self.processor.directory.rules(ws)
        users = self.processor.state.users
        prefix = keys.user_key(ws, "")
        after = bytes.fromhex(job["after"]) if job["after"] else None
        batch = list(_keys_after(users.backing, prefix, after, self.batch))
        outputs: list[Output] = []
        for key in batch:
            try:
                indexed = self._index(ws, name, rules, users.get(key))
            except Rejection:  # e.g. pointers that do not end: this profile is left as it is
                self.processor.state.discard()
                continue
            self.processor.state.stage()  # the profile's writes join the batch
            job["claimed"] += bool(indexed)
            outputs += indexed
        job["scanned"] += len(batch)
        wm.BACKFILL_SCANNED.labels(ws, name).inc(len(batch))
        if batch:
            job["after"] = batch[-1].hex()
        done = len(batch) < self.batch
        if done:
            meta["jobs"].remove(job)
        outputs.append(_progress(partition, job, done=done))
        return outputs

    def _index(self, ws: str, name: str, rules: IdentityRules, stored: Any) -> list[Output]:
        """What a record carrying the profile's value of ``name`` would cause: the value becomes the
        profile's identifier and is claimed (a merge when another user holds it). Nothing when the
        profile has no value, or claimed it already."""
        if not isinstance(stored, dict) or is_pointer(stored) or is_erased(stored) or "slot" not in stored:
            return []
        value = identifier_value(stored, name)
        if value is None or rules.is_exception(name, value) or [name, value] in stored["aliases"]:
            return []
        p = self.processor
        profile = p._profile(ws, stored["slot"])
        profile["identifiers"][name] = value
        profile["aliases"].append([name, value])
        outputs = [p._snapshot(ws, profile)]  # saved: Get User finds it by the value from now on
        header = {"ws": ws, "name": name, "value": value, "slot": profile["slot"]}
        return outputs + p.on_message(protocol.Message(protocol.CLAIM, header))

    def _gauges(self) -> None:
        running: dict[tuple[str, str], int] = {}
        for jobs in self._running.values():
            for job in jobs:
                running[job] = running.get(job, 0) + 1
        wm.BACKFILL_RUNNING.clear()
        for (ws, name), n in running.items():
            wm.BACKFILL_RUNNING.labels(ws, name).set(n)


def scan_again(state: State, partition: int) -> None:
    """Profiles moved onto ``partition`` (a growth of ``ingest.records``, :mod:`processors.growth`): its scans
    start again from the first profile, for every identifier it had indexed or was indexing. Without this,
    a profile that arrived behind a running scan, or after the scan had ended, would never be indexed (its
    old partition had not reached it yet). Scanning a profile again is cheap and changes nothing: one that
    claimed its value already is skipped."""
    meta = _meta(state.identity.get(meta_key(partition)))
    if meta["known"] or meta["jobs"]:
        state.identity.put(meta_key(partition), {"known": {}, "jobs": []})


def identifier_value(profile: dict[str, Any], name: str) -> str | None:
    """The profile's value of an identifier: its attribute (under the name or its standard key, the
    latest a record set), else the identifier it holds already."""
    attributes = profile.get("attributes") or {}
    for key in (name, *_aliases(name)):
        if key in attributes:
            value = as_identifier(attributes[key])
            if value is not None:
                return value
    return as_identifier((profile.get("identifiers") or {}).get(name))


def _aliases(name: str) -> tuple[str, ...]:
    from inflow.config.identifiers import IDENTIFIER_ALIASES

    alias = IDENTIFIER_ALIASES.get(name)
    return (alias,) if alias else ()


def _keys_after(
    backing: MutableMapping[Any, Any], prefix: bytes, after: bytes | None, limit: int
) -> Iterator[bytes]:
    """Up to ``limit`` stored keys starting with ``prefix``, in key order, after ``after``."""
    scan = getattr(backing, "keys_from", None)
    if scan is not None:  # the worker's RocksDB view: a seek, not a full scan
        source: Iterable[bytes] = scan(after or prefix)
    else:  # unit tests: a dict
        source = sorted(bytes(k) for k in backing)
    count = 0
    for key in source:
        if after is not None and key <= after or key < prefix:
            continue
        if not key.startswith(prefix) or count >= limit:
            return
        count += 1
        yield key


def _meta(stored: Any) -> dict[str, Any]:
    meta = dict(stored) if isinstance(stored, dict) else {}
    return {"known": dict(meta.get("known", {})), "jobs": [dict(j) for j in meta.get("jobs", [])]}


def _progress(partition: int, job: dict[str, Any], done: bool) -> Output:
    value = {
        "workspace_id": job["ws"],
        "identifier": job["name"],
        "partition": partition,
        "scanned": job["scanned"],
        "claimed": job["claimed"],
        "started_at": job.get("started"),
        "done": done,
        "updated_at": _now_ms(),
    }
    key = progress_key(job["ws"], job["name"], partition)
    return Output(BACKFILL, key, RECORD_NAME, value, raw=jsoncodec.dumps_bytes(value))


def _now_ms() -> int:
    return int(time.time() * 1000)
