"""Rows to ingest records: the same Avro records and topics as the gateway, with deterministic ids.

``event_uuid`` is a UUID5 over (import, folder, file, row), so a re-run or a resumed file produces the same
ids and downstream de-duplication makes the import effectively-once.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from inflow.producers.s3_import.definition import ImportDefinition, ImportType
from inflow.producers.s3_import.exceptions import RowError
from inflow.producers.s3_import.mapping import Role

NAMESPACE = UUID("6b3a3f52-3f7e-5c1e-9b61-1c1f0f3a7a10")
SOURCE = "s3_import"
# Every topic the importer writes or reads, by role, in one place (short names: the prefix is added).
TOPIC = {
    "users": "ingest.records",
    "events": "ingest.records",
    "aux": "ingest.aux",  # compacted: one record per workspace and key (``aux.py`` reads it)
    "processors.outcomes": "processors.outcomes",  # what the processors did with each file row
    "processors.rejected": "processors.rejected",
}
TOPIC_BY_TYPE = {
    ImportType.REGISTERED_USERS: TOPIC["users"],
    ImportType.ANONYMOUS_USERS: TOPIC["users"],
    ImportType.EVENTS: TOPIC["events"],
    ImportType.AUX_DATA: TOPIC["aux"],
}
RECORD_BY_TYPE = {
    ImportType.REGISTERED_USERS: "UserUpsert",
    ImportType.ANONYMOUS_USERS: "UserUpsert",
    ImportType.EVENTS: "EventRecord",
    ImportType.AUX_DATA: "UserUpsert",
}


def row_uuid(prefix: bytes, row: int) -> str:
    """UUID5 (RFC 4122 name-based, SHA-1) of ``<import>/<folder>/<file>/<row>`` in a fixed namespace.

    Same result as ``uuid.uuid5``; the namespace and file part are hashed once per file (``prefix``), and
    the version and variant bits are set on the hex text directly (this runs once per row).
    """
    h = hashlib.sha1(prefix + b"%d" % row, usedforsecurity=False).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


_VARIANT = {c: "89ab"[int(c, 16) & 0x3] for c in "0123456789abcdef"}


def uuid_prefix(import_name: str, folder: str, file_name: str) -> bytes:
    return NAMESPACE.bytes + f"{import_name}/{folder}/{file_name}/".encode()


def record_key(workspace_id: str, routing_id: str) -> bytes:
    """Partition key shared with the gateway: workspace and the routing identifier."""
    return f"{workspace_id}:{routing_id}".encode()


def _dumps(attrs: dict[str, Any]) -> str:
    """Compact JSON of a row's attributes; orjson is about six times faster than ``json`` here."""
    return orjson.dumps(attrs).decode()


class RecordBuilder:
    """Builds the Avro dict and key for one converted row of a definition's type."""

    def __init__(self, d: ImportDefinition, folder: str, file_name: str, run_id: str, received_at: datetime):
        self.d = d
        self.kind = d.type
        self.workspace = d.workspace_id
        self.key_prefix = f"{d.workspace_id}:"
        self.prefix = uuid_prefix(d.name, folder, file_name)
        self.origin = f"{d.name}/{file_name}/"
        # The fields that are the same for every row of the file, set once.
        template: dict[str, Any] = {
            "workspace_id": d.workspace_id,
            "request_id": run_id,
            "received_at": received_at,
            "source": SOURCE,
            "client_ip": None,
            "anonymous_id": None,
            "customer_id": None,
        }
        if self.kind is ImportType.EVENTS:
            template |= {
                "device_id": None,
                "action": d.event_name or "",
                "platform": None,
                "moe_os_type": None,
                "app_version": None,
                "current_time": None,
                "user_timezone_offset": None,
            }
        else:
            template["update_existing_only"] = (
                d.do_not_create_new_users and self.kind is not ImportType.ANONYMOUS_USERS
            )
        self.template = template
        # (column attribute, workspace identifier) of an identity column that identifies rows instead of
        # User ID (identity resolution on); set by the importer once it checked the workspace has it.
        self.identity: tuple[str, str] | None = None
        # What an encoder may treat as fixed for the whole file: the template minus the per-row identity.
        self.constants = {k: v for k, v in template.items() if k not in ("customer_id", "anonymous_id")}

    def build(
        self, row: int, attrs: dict[str, Any], roles: dict[Role, Any], ids: dict[str, str]
    ) -> tuple[bytes, dict[str, Any]]:
        record = self.template.copy()
        record["event_uuid"] = row_uuid(self.prefix, row)
        record["origin"] = self.origin + str(row)
        record["user_identifiers"] = ids
        record["attributes_json"] = _dumps(attrs)
        if self.kind is ImportType.ANONYMOUS_USERS:
            anon = roles.get(Role.ANONYMOUS_ID)
            if not anon:
                raise RowError("Column value for the selected identifier attribute (Anonymous ID) is absent")
            record["anonymous_id"] = anon = str(anon)
            return (self.key_prefix + anon).encode(), record
        if self.identity is not None:
            route = self._identity_route(ids)
        else:
            uid = roles.get(Role.USER_ID)
            if not uid:
                raise RowError("Column value for the selected identifier attribute (ID) is absent")
            record["customer_id"] = route = uid
        if self.kind is ImportType.EVENTS:
            when = roles.get(Role.EVENT_TIME_UTC) or roles.get(Role.EVENT_TIME_APP_TIMEZONE)
            if when is None:
                raise RowError("event datetime missing")
            record["user_time"] = when
        return (self.key_prefix + route).encode("utf-8", "surrogatepass"), record

    def _identity_route(self, ids: dict[str, str]) -> str:
        """The row's user is found by its identifier value (no customer_id): the key is the processors'
        route of that identifier, ``name=value``, so the row lands where the value's index entry lives."""
        assert self.identity is not None
        attr, name = self.identity
        value = ids.get(attr)
        if value is None or not value.strip():
            raise RowError(f"Column value for the selected identifier attribute ({attr}) is absent")
        return f"{name}={value}"
