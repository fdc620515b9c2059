"""One imported file as MoEngage's File Imports API and ``inflow imports show --json`` report it (§4.8).

Run records (``ImportRun`` in ``control.import-runs``) use Inflow's states; the API speaks MoEngage's:
RUNNING (records written before v2) is PROCESSING, and RETRYING (S3 or Kafka away, retried by itself) is
WAITING with the reason in ``status_msg``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

QUEUED = "QUEUED"
PROCESSING = "PROCESSING"
WAITING = "WAITING"
RETRYING = "RETRYING"
SUCCESSFUL = "SUCCESSFUL"
PARTIAL_SUCCESS = "PARTIAL_SUCCESS"
FAILED = "FAILED"
END_STATES = frozenset({SUCCESSFUL, PARTIAL_SUCCESS, FAILED})
# The File Imports API's file_status filter values (§4.8).
FILE_STATUSES = (SUCCESSFUL, FAILED, PARTIAL_SUCCESS, PROCESSING, QUEUED, WAITING)
_API_STATUS = {"RUNNING": PROCESSING, RETRYING: WAITING}
# Import definition type -> the API's import_type.
IMPORT_TYPES = {
    "registered_users": "USERS",
    "anonymous_users": "USERS",
    "events": "EVENTS",
    "aux_data": "AUX_DATA",
}
PAGE_SIZE = 50  # run history and import details: 50 per page, ``offset`` 1-based


def api_status(status: str) -> str:
    """A run record's state in the API's vocabulary."""
    return _API_STATUS.get(status, status)


def timestamp(value: datetime | None) -> str | None:
    """MoEngage's ``2024-11-14T12:31:31.713000`` (UTC, no zone suffix)."""
    return None if value is None else value.replace(tzinfo=None).isoformat(timespec="microseconds")


def file_item(run: dict[str, Any]) -> dict[str, Any]:
    """The §4.8 run-history item of one run record (a decoded ``ImportRun``)."""
    return {
        "id": run["run_id"],
        "file_name": run["file_name"],
        "scheduled_at": timestamp(run["started_at"]),
        "completed_at": timestamp(run.get("completed_at")),
        "type": run.get("import_type") or "",
        "file_size": str(run.get("file_size") or 0),
        "file_status": api_status(run["status"]),
        "status_msg": run.get("message") or "",
        "total_rows": run.get("rows_total") or 0,
        "skipped_rows": run.get("rows_skipped") or 0,
        "updated_rows": run.get("rows_updated") or 0,
        "failed_rows": run.get("rows_failed") or 0,
        "aux_data_added_count": run.get("aux_data_added_count") or 0,
        "aux_data_failed_count": run.get("aux_data_failed_count") or 0,
        "added_rows": run.get("rows_added") or 0,
    }


def page(items: list[Any], offset: int) -> tuple[list[Any], bool]:
    """Page ``offset`` (1-based) of 50 items, and whether more follow."""
    start = (offset - 1) * PAGE_SIZE
    return items[start : start + PAGE_SIZE], len(items) > start + PAGE_SIZE
