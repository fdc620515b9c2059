"""Rows to ingest records: the same Avro records and topics as the gateway, with deterministic ids.

``event_uuid`` is a UUID5 over (import, folder, file, row), so a re-run or a resumed file produces the same
ids and downstream de-duplication makes the import effectively-once.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any
from uuid import UUID

from producers.s3_import.definition import ImportDefinition, ImportType
from producers.s3_import.exceptions import RowError
from producers.s3_import.mapping import Role

NAMESPACE = UUID("6b3a3f52-3f7e-5c1e-9b61-1c1f0f3a7a10")
SOURCE = "s3_import"
TOPIC_BY_TYPE = {
    ImportType.REGISTERED_USERS: "ingest.users",
    ImportType.ANONYMOUS_USERS: "ingest.users",
    ImportType.EVENTS: "ingest.events",
    ImportType.AUX_DATA: "ingest.aux",
}
RECORD_BY_TYPE = {
    ImportType.REGISTERED_USERS: "UserUpsert",
    ImportType.ANONYMOUS_USERS: "UserUpsert",
    ImportType.EVENTS: "EventRecord",
    ImportType.AUX_DATA: "UserUpsert",
}


def row_uuid(prefix: bytes, row: int) -> str:
    """UUID5 (RFC 4122 name-based, SHA-1) of ``<import>/<folder>/<file>/<row>`` in a fixed namespace.

    Same result as ``uuid.uuid5``; the namespace and file part are hashed once per file (``prefix``).
    """
    digest = bytearray(hashlib.sha1(prefix + str(row).encode(), usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid_prefix(import_name: str, folder: str, file_name: str) -> bytes:
    return NAMESPACE.bytes + f"{import_name}/{folder}/{file_name}/".encode()


def record_key(workspace_id: str, routing_id: str) -> bytes:
    """Partition key shared with the gateway: workspace and the routing identifier."""
    return f"{workspace_id}:{routing_id}".encode()


class RecordBuilder:
    """Builds the Avro dict and key for one converted row of a definition's type."""

    def __init__(self, d: ImportDefinition, folder: str, file_name: str, run_id: str, received_at: datetime):
        self.d = d
        self.kind = d.type
        self.prefix = uuid_prefix(d.name, folder, file_name)
        self.origin = f"{d.name}/{file_name}/"
        self.base: dict[str, Any] = {
            "workspace_id": d.workspace_id,
            "request_id": run_id,
            "received_at": received_at,
            "source": SOURCE,
            "client_ip": None,
        }
        self.event_name = d.event_name or ""

    def build(
        self, row: int, attrs: dict[str, Any], roles: dict[Role, Any], ids: dict[str, str]
    ) -> tuple[bytes, dict[str, Any]]:
        uid = roles.get(Role.USER_ID)
        record = dict(self.base)
        record["event_uuid"] = row_uuid(self.prefix, row)
        record["origin"] = self.origin + str(row)
        record["user_identifiers"] = ids
        record["attributes_json"] = json.dumps(attrs, separators=(",", ":"), ensure_ascii=False)
        if self.kind is ImportType.EVENTS:
            if not uid:
                raise RowError("Column value for the selected identifier attribute (ID) is absent")
            when = roles.get(Role.EVENT_TIME_UTC) or roles.get(Role.EVENT_TIME_APP_TIMEZONE)
            if when is None:
                raise RowError("event datetime missing")
            record |= {
                "customer_id": uid,
                "anonymous_id": None,
                "device_id": None,
                "action": self.event_name,
                "platform": None,
                "moe_os_type": None,
                "app_version": None,
                "user_time": when,
                "current_time": None,
                "user_timezone_offset": None,
            }
            return record_key(self.d.workspace_id, uid), record
        if self.kind is ImportType.ANONYMOUS_USERS:
            anon = roles.get(Role.ANONYMOUS_ID)
            if not anon:
                raise RowError("Column value for the selected identifier attribute (Anonymous ID) is absent")
            record |= {"customer_id": None, "anonymous_id": str(anon), "update_existing_only": False}
            return record_key(self.d.workspace_id, str(anon)), record
        if not uid:
            raise RowError("Column value for the selected identifier attribute (ID) is absent")
        record |= {
            "customer_id": uid,
            "anonymous_id": None,
            "update_existing_only": self.d.do_not_create_new_users,
        }
        return record_key(self.d.workspace_id, uid), record
