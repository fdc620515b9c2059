"""Secrets of a stream kept out of everything that is shown or logged.

A stream's URL may carry credentials (``https://user:pass@host/p?token=...``), and its headers and auth
values are secrets. Listings show them as ``**********``; logs, error messages and the reasons kept with
parked batches show URLs with ``***`` in place of the password and of every query value
(``https://h/p?token=***``), and any secret value that an error message repeats is replaced the same way.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from inflow.config.secrets import SecretBox

MASK = "**********"
LOG_MASK = "***"
MIN_SECRET_LEN = 4  # shorter values ("1", "on") would shred messages and say little about a secret


def mask_url(url: str, mask: str = LOG_MASK) -> str:
    """The URL with the userinfo password and every query value masked; an encrypted URL is all mask."""
    if SecretBox.is_encrypted(url):
        return mask
    try:
        parts = urlsplit(url)
    except ValueError:
        return mask
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{mask}@{host}" if ":" in userinfo else f"{user}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = "&".join(f"{quote(k, safe='')}={mask}" for k, _ in pairs) if pairs else mask
    return urlunsplit((parts.scheme, netloc, parts.path, query, mask if parts.fragment else ""))


def url_secrets(url: str) -> list[str]:
    """The secret parts of a URL: its password and its query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found = [v for _, v in parse_qsl(parts.query, keep_blank_values=True)]
    if parts.password:
        found.append(parts.password)
    return found


class Redactor:
    """Replaces a stream's URL and secret values in any text with their masked forms."""

    def __init__(self, url: str, secrets: Iterable[str] = ()) -> None:
        self._url = url
        self._masked_url = mask_url(url)
        values = [*url_secrets(url), *secrets]
        # Basic auth travels base64-encoded: its token is a secret of its own.
        values += [base64.b64encode(v.encode()).decode() for v in list(values) if ":" in v]
        self._values = sorted({v for v in values if len(v) >= MIN_SECRET_LEN}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        text = text.replace(self._url, self._masked_url)
        for value in self._values:
            text = text.replace(value, LOG_MASK)
        return text
