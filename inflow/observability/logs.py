"""Logging of every component: text lines, or one JSON object per line with ``INFLOW_LOG_FORMAT=json``.

A JSON line holds ``time`` (UTC, ISO 8601), ``level``, ``component``, ``logger`` and ``message``, plus
``request_id`` / ``event_id`` (and any other name in ``CONTEXT_FIELDS``) when the call passes them with
``extra=``, and ``exception`` with the traceback when there is one::

    log.info("request accepted", extra={"request_id": rid})
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from inflow.config.settings import ObservabilitySettings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT_FIELDS = ("request_id", "event_id", "workspace", "stream", "import_name", "file")


class JsonFormatter(logging.Formatter):
    """One JSON object per record; never raises for a value JSON cannot hold (it is shown as text)."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "component": self.component,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(
    component: str,
    level: str | int = logging.INFO,
    settings: ObservabilitySettings | None = None,
) -> logging.Handler:
    """Replace the root logger's handlers with one on stderr in the configured format; returns it.

    Filters already on the root handlers (masking of secrets, for one) are kept on the new handler.
    """
    chosen = settings or ObservabilitySettings()
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    if chosen.log_format == "json":
        handler.setFormatter(JsonFormatter(component))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    for old in list(root.handlers):
        for kept in old.filters:
            handler.addFilter(kept)
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_level(level))
    return handler


def _level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    name = level.upper()
    name = {"WARN": "WARNING", "ERR": "ERROR"}.get(name, name)
    found = logging.getLevelName(name)
    if not isinstance(found, int):
        raise ValueError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    return found
