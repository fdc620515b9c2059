"""The profile store: a materialized view of the compacted ``profiles`` topic, for Get User.

Indexed by workspace + uid (moengage_id), workspace + customer_id and workspace + identifier value.
Snapshots carry a revision; an older revision delivered late never replaces a newer one. A profile that
was merged away points at the retained one, which is what a lookup returns.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message

from inflow.config.settings import KafkaSettings
from inflow.kafka.view import CompactedView
from inflow.schemas.serde import AvroSerde

TOPIC = "profiles"
RECORD = "UserProfile"
MAX_MERGE_HOPS = 10


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


class ProfileStore:
    """Follows ``profiles``; lookups are dictionary reads under a lock shared with the view's thread."""

    def __init__(self, kafka: KafkaSettings, serde: AvroSerde) -> None:
        self.kafka = kafka
        self.serde = serde
        self.topic = kafka.topic(TOPIC)
        self._by_uid: dict[tuple[str, str], StoredProfile] = {}
        self._revision: dict[tuple[str, str], int] = {}
        self._merged: dict[tuple[str, str], str] = {}
        self._index: dict[tuple[str, str, str], str] = {}
        self._lock = threading.Lock()
        self.view: CompactedView | None = None

    def start(self) -> ProfileStore:
        self.view = CompactedView(self.kafka, self.topic, apply=self._apply, name="profiles").start()
        return self

    def stop(self) -> None:
        if self.view:
            self.view.stop()

    @property
    def ready(self) -> bool:
        return self.view is not None and self.view.ready.is_set()

    @property
    def problem(self) -> str:
        if self.view is None:
            return "the profile store is not started"
        return self.view.problem or "the profile store is still reading the profiles topic"

    def _apply(self, msg: Message) -> None:
        value = msg.value()
        if value is None:
            return
        _, rec = self.serde.decode(value, expected=RECORD)
        ident = (rec["workspace_id"], rec["uid"])
        with self._lock:
            if self._revision.get(ident, -1) > rec["revision"]:
                return
            self._revision[ident] = rec["revision"]
            self._unindex(ident)
            if rec["merged_into"]:
                self._merged[ident] = rec["merged_into"]
                return
            self._merged.pop(ident, None)
            if rec["deleted"]:
                return
            profile = StoredProfile(
                rec["workspace_id"], rec["uid"], rec["customer_id"], dict(rec["identifiers"]), rec
            )
            self._by_uid[ident] = profile
            if profile.customer_id is not None:
                self._index[(profile.workspace_id, "customer_id", profile.customer_id)] = profile.uid
            for name, val in profile.identifiers.items():
                self._index[(profile.workspace_id, name, val)] = profile.uid

    def _unindex(self, ident: tuple[str, str]) -> None:
        old = self._by_uid.pop(ident, None)
        if old is None:
            return
        keys = [(old.workspace_id, "customer_id", old.customer_id)] if old.customer_id else []
        keys += [(old.workspace_id, n, v) for n, v in old.identifiers.items()]
        for k in keys:
            if self._index.get(k) == old.uid:  # type: ignore[arg-type]
                del self._index[k]  # type: ignore[arg-type]

    def find(self, workspace_id: str, identifier_type: str, identifier: str) -> StoredProfile | None:
        """By ``moengage_id`` (uid), ``customer_id`` or any identity-resolution identifier name."""
        with self._lock:
            if identifier_type == "moengage_id":
                uid: str | None = identifier
            else:
                uid = self._index.get((workspace_id, identifier_type, identifier))
            for _ in range(MAX_MERGE_HOPS):
                if uid is None:
                    return None
                profile = self._by_uid.get((workspace_id, uid))
                if profile is not None:
                    return profile
                uid = self._merged.get((workspace_id, uid))
            return None
