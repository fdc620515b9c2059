"""Credentials never reach the gateway's logs: a logging filter that masks them in every record.

aiohttp logs a request it cannot parse together with the offending header line, which may be the
``Authorization`` header with the workspace's data API key in it; the filter masks such values (and any
``Basic``/``Bearer`` credential) in the message and the traceback before a handler writes the record.
"""

from __future__ import annotations

import logging
import re

MASK = "[redacted]"
_PATTERNS = (
    re.compile(r"(?i)((?:proxy-)?authorization\s*[:=]\s*)[^\r\n'\"]*"),
    re.compile(r"(?i)\b(basic|bearer)\s+[A-Za-z0-9+/=._~-]{4,}"),
)
LOGGERS = ("aiohttp.server", "aiohttp.access", "aiohttp.web", "aiohttp.internal", "inflow")


def redact(text: str) -> str:
    text = _PATTERNS[0].sub(lambda m: m.group(1) + MASK, text)
    return _PATTERNS[1].sub(lambda m: f"{m.group(1)} {MASK}", text)


class RedactCredentials(logging.Filter):
    """Masks credentials in a record's message and traceback (the record is rewritten in place)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        elif record.exc_text:
            text += "\n" + record.exc_text
        clean = redact(text)
        if clean != text or record.exc_info:
            record.msg, record.args = clean, None
            record.exc_info, record.exc_text = None, None
        return True


def install(handlers: list[logging.Handler] | None = None) -> None:
    """Attach the filter to aiohttp's and Inflow's loggers and to ``handlers`` (default: the root's)."""
    guard = RedactCredentials()
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactCredentials) for f in logger.filters):
            logger.addFilter(guard)
    for handler in logging.getLogger().handlers if handlers is None else handlers:
        if not any(isinstance(f, RedactCredentials) for f in handler.filters):
            handler.addFilter(guard)
