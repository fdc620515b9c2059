"""The profile store: a materialized view of the compacted ``profiles`` topic, for Get User.

Indexed by workspace + uid (moengage_id), workspace + customer_id and workspace + identifier value.
Snapshots carry a revision; an older revision delivered late never replaces a newer one. A profile that
was merged away points at the retained one, which is what a lookup returns.

The view lives in a RocksDB database on disk (``rocksdict``), not in the gateway's memory: its memory is
the write buffers and a bounded block cache (``GatewaySettings.profile_cache_mb``), whatever the number of
profiles. Each gateway builds its own database from the topic at start (in a directory of its own under
``profile_store_dir``, default ``$INFLOW_HOME/gateway-profiles``) and deletes it at stop; a directory a
crashed gateway left behind is deleted by the next gateway that starts there.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import rocksdict
from confluent_kafka import Message

from inflow.config.settings import KafkaSettings
from inflow.kafka.clients import new_consumer, topic_partitions
from inflow.kafka.errors import KafkaFault
from inflow.kafka.view import CompactedView
from inflow.schemas.serde import AvroSerde

log = logging.getLogger(__name__)
TOPIC = "profiles"
RECORD = "UserProfile"
MAX_MERGE_HOPS = 10
WRITE_BUFFER_BYTES = 8 * 1024 * 1024
# Key spaces of the database: the state of a uid (revision, merged_into, profile) and the identifier index.
STATE, INDEX = b"s", b"i"
NOT_STARTED = "not started"  # CompactedView's problem until its thread has opened the topic
KEPT = ("customer_id", "identifiers", "attributes_json", "platforms")
ERASED_REVISION = 2**62  # the state of a tombstoned uid: above any revision a snapshot can carry


@dataclass(frozen=True, slots=True)
class StoredProfile:
    """The fields Get User answers with."""

    workspace_id: str
    uid: str
    customer_id: str | None
    identifiers: dict[str, str]
    record: dict[str, Any]

    def user_attributes(self) -> dict[str, Any]:
        """MoEngage export shape: identity fields, first/last seen, then the merged attributes."""
        rec = self.record
        out: dict[str, Any] = {"moengage_id": self.uid}
        if self.customer_id is not None:
            out["uid"] = self.customer_id
        out |= self.identifiers
        try:
            attributes = json.loads(rec["attributes_json"])
        except ValueError:
            attributes = {}
        if isinstance(attributes, dict):
            out |= attributes
        out["cr_t"] = rec["first_seen"].isoformat()
        out["u_l_a"] = rec["last_seen"].isoformat()
        if rec["platforms"]:
            out["platforms"] = list(rec["platforms"])
        return out


def _key(space: bytes, *parts: str) -> bytes:
    """An unambiguous key whatever the ids contain: the space byte and the parts as a JSON array."""
    return space + orjson.dumps(parts)


def open_database(path: Path, cache_mb: int) -> rocksdict.Rdict:
    """A database for the view: bounded block cache (index and filter blocks included), no WAL (the
    view is rebuilt from the topic at every start, so nothing needs to survive a crash)."""
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(WRITE_BUFFER_BYTES)
    options.set_max_write_buffer_number(2)
    table = rocksdict.BlockBasedOptions()
    table.set_block_cache(rocksdict.Cache(cache_mb * 1024 * 1024))
    table.set_cache_index_and_filter_blocks(True)
    options.set_block_based_table_factory(table)
    db = rocksdict.Rdict(str(path), options)
    writes = rocksdict.WriteOptions()
    writes.disable_wal = True  # type: ignore[assignment,method-assign]  # a property, typed as a method
    db.set_write_options(writes)
    return db


def remove_abandoned(root: Path) -> None:
    """Delete the databases under ``root`` that no running gateway holds (RocksDB's lock is free)."""
    if not root.is_dir():
        return
    for path in root.iterdir():
        if not path.is_dir():
            continue
        try:
            db = rocksdict.Rdict(str(path), rocksdict.Options(raw_mode=True))
        except Exception as exc:  # locked: a running gateway's (or not a database at all)
            log.debug("keeping %s: %s", path, exc)
            continue
        db.close()
        shutil.rmtree(path, ignore_errors=True)
        log.info("removed the abandoned profile store %s", path)


class ProfileStore:
    """Follows ``profiles`` into a RocksDB database; lookups read it under a lock shared with the view."""

    def __init__(
        self, kafka: KafkaSettings, serde: AvroSerde, directory: Path | None = None, cache_mb: int = 32
    ) -> None:
        self.kafka = kafka
        self.serde = serde
        self.topic = kafka.topic(TOPIC)
        self.directory = directory
        self.cache_mb = cache_mb
        self._db: rocksdict.Rdict | None = None
        self._path: Path | None = None
        self._lock = threading.Lock()
        self._initial_problem: str | None = None
        self.view: CompactedView | None = None

    def start(self, name: str = "gateway") -> ProfileStore:
        """Open a fresh database (``name`` keeps each gateway's apart) and follow the topic into it."""
        root = self.directory or default_directory()
        self._path = root / f"{name}-{self.kafka.topic_prefix}"
        shutil.rmtree(self._path, ignore_errors=True)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._db = open_database(self._path, self.cache_mb)
        self._initial_problem = self._missing_topic()
        self.view = CompactedView(self.kafka, self.topic, apply=self._apply, name="profiles").start()
        remove_abandoned(root)  # after the view started: its lock keeps its own database
        return self

    def _missing_topic(self) -> str | None:
        """Whether the topic is missing, known at once (the view says so only after a few seconds)."""
        consumer = new_consumer(self.kafka, f"{self.kafka.topic_prefix}.profiles-check")
        try:
            topic_partitions(consumer, self.topic, timeout=2)
        except KafkaFault as exc:
            return str(exc)
        finally:
            consumer.close()
        return None

    def stop(self) -> None:
        if self.view:
            self.view.stop()
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)

    @property
    def ready(self) -> bool:
        return self.view is not None and self.view.ready.is_set()

    @property
    def problem(self) -> str:
        if self.view is None:
            return "the profile store is not started"
        problem = self.view.problem
        if problem == NOT_STARTED and self._initial_problem:
            return self._initial_problem
        return problem or "the profile store is still reading the profiles topic"

    def _state(self, db: rocksdict.Rdict, workspace_id: str, uid: str) -> dict[str, Any] | None:
        raw = db.get(_key(STATE, workspace_id, uid))
        return None if raw is None else orjson.loads(raw)

    def _apply(self, msg: Message) -> None:
        value = msg.value()
        if value is None:
            self._erase(msg.key())
            return
        _, rec = self.serde.decode(value, expected=RECORD)
        ws, uid = rec["workspace_id"], rec["uid"]
        with self._lock:
            db = self._db
            if db is None:
                return
            old = self._state(db, ws, uid)
            if old is not None and old["revision"] > rec["revision"]:
                return
            batch = rocksdict.WriteBatch(raw_mode=True)
            kept = old.get("profile") if old is not None else None
            if kept is not None:  # unindex the previous snapshot
                for key in _index_keys(ws, kept):
                    if db.get(key) == uid.encode():
                        batch.delete(key)
            profile = None
            if not rec["merged_into"] and not rec["deleted"]:
                profile = {k: rec[k] for k in KEPT} | {
                    "first_seen": rec["first_seen"].isoformat(),
                    "last_seen": rec["last_seen"].isoformat(),
                }
                for key in _index_keys(ws, profile):
                    batch.put(key, uid.encode())
            state = {"revision": rec["revision"], "merged_into": rec["merged_into"], "profile": profile}
            batch.put(_key(STATE, ws, uid), orjson.dumps(state))
            db.write(batch)

    def _erase(self, key: bytes | None) -> None:
        """A tombstone (Delete User): the uid's profile and its index entries are forgotten, and no older
        snapshot of it is taken again (a deleted user's uid is never given to another user)."""
        workspace_id, sep, uid = (key or b"").decode("utf-8", "replace").rpartition(":")
        if not sep:
            return
        with self._lock:
            db = self._db
            if db is None:
                return
            old = self._state(db, workspace_id, uid)
            batch = rocksdict.WriteBatch(raw_mode=True)
            kept = old.get("profile") if old is not None else None
            if kept is not None:
                for index_key in _index_keys(workspace_id, kept):
                    if db.get(index_key) == uid.encode():
                        batch.delete(index_key)
            state = {"revision": ERASED_REVISION, "merged_into": None, "profile": None}
            batch.put(_key(STATE, workspace_id, uid), orjson.dumps(state))
            db.write(batch)

    def find(self, workspace_id: str, identifier_type: str, identifier: str) -> StoredProfile | None:
        """By ``moengage_id`` (uid), ``customer_id`` or any identity-resolution identifier name."""
        with self._lock:
            db = self._db
            if db is None:
                return None
            if identifier_type == "moengage_id":
                uid: str | None = identifier
            else:
                raw = db.get(_key(INDEX, workspace_id, identifier_type, identifier))
                uid = None if raw is None else bytes(raw).decode()
            for _ in range(MAX_MERGE_HOPS):
                if uid is None:
                    return None
                state = self._state(db, workspace_id, uid)
                if state is None:
                    return None
                if state["profile"] is not None:
                    return _stored(workspace_id, uid, state["profile"])
                uid = state["merged_into"]
            return None


def _index_keys(workspace_id: str, profile: dict[str, Any]) -> list[bytes]:
    keys = []
    if profile["customer_id"] is not None:
        keys.append(_key(INDEX, workspace_id, "customer_id", profile["customer_id"]))
    keys += [_key(INDEX, workspace_id, name, value) for name, value in profile["identifiers"].items()]
    return keys


def _stored(workspace_id: str, uid: str, profile: dict[str, Any]) -> StoredProfile:
    record = profile | {
        "first_seen": datetime.fromisoformat(profile["first_seen"]),
        "last_seen": datetime.fromisoformat(profile["last_seen"]),
    }
    return StoredProfile(workspace_id, uid, profile["customer_id"], dict(profile["identifiers"]), record)


def default_directory() -> Path:
    from inflow.config.settings import PathSettings

    return PathSettings().home / "gateway-profiles"
