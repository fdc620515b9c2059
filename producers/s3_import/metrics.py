"""Prometheus metrics of the poller: file rows by outcome, files by state, time per file."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ROWS = Counter(
    "inflow_import_rows",
    "File rows read, by outcome (added: a record written to the topic; failed; skipped: empty)",
    ["workspace", "import_name", "topic", "state"],
)
FILES = Counter(
    "inflow_import_files",
    "Files that reached a state (SUCCESSFUL, PARTIAL_SUCCESS, FAILED, RETRYING, WAITING)",
    ["workspace", "import_name", "status"],
)
FILES_RUNNING = Gauge("inflow_import_files_running", "Files being imported now", ["workspace"])
FILE_SECONDS = Histogram(
    "inflow_import_file_seconds",
    "Time to import one file, from its claim to its final run record",
    ["workspace"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
