"""Admin tokens of the console and admin API, distinct from workspaces' data API keys.

A token is 32 random bytes (``inflow_adm_`` + url-safe text); only its SHA-256 digest is stored, in the
compacted ``control.admin-tokens`` topic keyed by token name. A digest of a high-entropy secret cannot be
reversed by guessing, so a slow hash (scrypt, as for data API keys that users may choose) is not needed and
every request can be checked at once. Roles: ``admin`` (everything) and ``read`` (read-only).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message

from inflow.config.settings import KafkaSettings
from inflow.console.exceptions import TokenError
from inflow.kafka.errors import KafkaFault
from inflow.kafka.producer import KafkaProducer
from inflow.kafka.view import CompactedView
from inflow.schemas.serde import AvroSerde

TOPIC = "control.admin-tokens"
RECORD = "AdminToken"
ROLES = ("admin", "read")
PREFIX = "inflow_adm_"
BOOTSTRAP = "bootstrap"
MIN_LENGTH = 32  # INFLOW_CONSOLE_TOKEN: at least this many random characters
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def generate_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class AdminToken:
    name: str
    role: str
    token_sha256: str
    created_at: datetime
    created_by: str
    revoked: bool = False

    def public(self) -> dict[str, Any]:
        """Everything but the digest."""
        return {
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "revoked": self.revoked,
        }


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise TokenError(f"token name {name!r} must be 1-64 letters, digits, '_', '.' or '-'")


def check_role(role: str) -> None:
    if role not in ROLES:
        raise TokenError(f"role must be one of {', '.join(ROLES)}, not {role!r}")


class TokenStore:
    """Tokens as read from the topic (followed by the console, read once by the CLI); writes go through
    the topic and are applied locally once the broker acknowledged them."""

    def __init__(self, kafka: KafkaSettings, serde: AvroSerde) -> None:
        self.kafka = kafka
        self.serde = serde
        self.topic = kafka.topic(TOPIC)
        self._tokens: dict[str, AdminToken] = {}
        self._lock = threading.Lock()
        self.view: CompactedView | None = None
        self._producer: KafkaProducer | None = None

    def _apply(self, msg: Message) -> None:
        key, value = msg.key(), msg.value()
        if value is None:
            if key is not None:
                with self._lock:
                    self._tokens.pop(key.decode(), None)
            return
        _, record = self.serde.decode(value, expected=RECORD)
        with self._lock:
            self._tokens[record["name"]] = AdminToken(**record)

    def start(self) -> TokenStore:
        self.view = CompactedView(self.kafka, self.topic, apply=self._apply, name="admin-tokens").start()
        return self

    def load(self, timeout: float = 30.0) -> TokenStore:
        view = CompactedView(self.kafka, self.topic, apply=self._apply, name="admin-tokens")
        try:
            view.open(min(timeout, 5.0)).catch_up(timeout)
        except KafkaFault as exc:
            raise TokenError(
                f"cannot read {self.topic}: {exc} (create it with `inflow topics create`)"
            ) from exc
        finally:
            view.close()
        return self

    def wait_ready(self, timeout: float) -> bool:
        return self.view is not None and self.view.wait_ready(timeout)

    def stop(self) -> None:
        if self.view is not None:
            self.view.stop()
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close()

    # --- reading ----------------------------------------------------------------------------------
    def all(self) -> list[AdminToken]:
        with self._lock:
            return sorted(self._tokens.values(), key=lambda t: t.name)

    def verify(self, token: str) -> AdminToken | None:
        """The live token whose digest matches (compared in constant time), else None."""
        if not MIN_LENGTH <= len(token) <= 200:
            return None
        presented = digest(token)
        found = None
        for candidate in self.all():
            if hmac.compare_digest(candidate.token_sha256, presented) and not candidate.revoked:
                found = candidate
        return found

    def has_admin(self) -> bool:
        return any(t.role == "admin" and not t.revoked for t in self.all())

    # --- writing ----------------------------------------------------------------------------------
    def _publish(self, token: AdminToken, timeout: float = 15.0) -> AdminToken:
        if self._producer is None:
            options: dict[str, Any] = {"linger.ms": 0, "message.timeout.ms": int(timeout * 1000)}
            self._producer = KafkaProducer(self.kafka, name="admin-tokens", **options)
        record = {
            "name": token.name,
            "role": token.role,
            "token_sha256": token.token_sha256,
            "created_at": token.created_at,
            "created_by": token.created_by,
            "revoked": token.revoked,
        }
        try:
            self._producer.publish_and_wait(
                self.topic, token.name.encode(), self.serde.encode(RECORD, record), timeout
            )
        except KafkaFault as exc:
            raise TokenError(f"cannot store admin token {token.name} in {self.topic}: {exc}") from exc
        with self._lock:
            self._tokens[token.name] = token
        return token

    def create(
        self, name: str, role: str, created_by: str, token: str | None = None
    ) -> tuple[str, AdminToken]:
        """A new token (returned once, in clear) and its stored form; a live name cannot be reused."""
        check_name(name)
        check_role(role)
        current = self._tokens.get(name)
        if current is not None and not current.revoked:
            raise TokenError(f"admin token {name!r} exists; revoke it first")
        text = token or generate_token()
        stored = AdminToken(name, role, digest(text), datetime.now(UTC), created_by)
        return text, self._publish(stored)

    def revoke(self, name: str) -> AdminToken:
        current = self._tokens.get(name)
        if current is None or current.revoked:
            raise TokenError(f"no live admin token named {name!r}")
        return self._publish(replace(current, revoked=True))

    def bootstrap(self, given: str | None) -> str | None:
        """At start: accept ``given`` (INFLOW_CONSOLE_TOKEN) as the admin token ``bootstrap``; without it,
        create an admin token when none is live. Returns a newly generated token to print once, else None."""
        if given is not None:
            if not MIN_LENGTH <= len(given) <= 200:
                raise TokenError(f"INFLOW_CONSOLE_TOKEN must be {MIN_LENGTH} to 200 random characters")
            if self.verify(given) is None:
                stored = AdminToken(BOOTSTRAP, "admin", digest(given), datetime.now(UTC), BOOTSTRAP)
                self._publish(stored)
            return None
        if self.has_admin():
            return None
        text = generate_token()
        self._publish(AdminToken(BOOTSTRAP, "admin", digest(text), datetime.now(UTC), BOOTSTRAP))
        return text
