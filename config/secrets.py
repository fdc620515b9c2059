"""Secrets encrypted at rest (import credentials, PGP passphrases, stream passwords) with Fernet.

The key comes from ``INFLOW_SECRET_KEY`` (a Fernet key: 32 url-safe base64 bytes); when unset, one is
generated once into ``<INFLOW_HOME>/secret.key`` with mode 0600. Ciphertexts are prefixed ``enc:v1:`` so
encrypted and plain values are never confused.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

from inflow.config.settings import PathSettings
from inflow.errors import ConfigError

PREFIX = "enc:v1:"
HOW_TO_MAKE_A_KEY = "`inflow config new-secret-key` prints a fresh one"


class SecretBox:
    """Encrypts and decrypts short secrets for storage in Kafka control topics."""

    def __init__(self, key: bytes) -> None:
        if not key.strip():
            raise ConfigError(
                "INFLOW_SECRET_KEY is set but empty: unset it to generate one into $INFLOW_HOME/secret.key, "
                f"or set a Fernet key shared by every process ({HOW_TO_MAKE_A_KEY})"
            )
        try:
            self._fernet = Fernet(key)
        except ValueError as exc:
            raise ConfigError(
                f"INFLOW_SECRET_KEY is not a valid Fernet key (32 url-safe base64 bytes; {HOW_TO_MAKE_A_KEY})"
            ) from exc

    @classmethod
    def from_settings(cls, paths: PathSettings) -> SecretBox:
        if paths.secret_key is not None:
            return cls(paths.secret_key.get_secret_value().encode())
        return cls(load_or_create_key(paths.home / "secret.key"))

    def encrypt(self, plain: str | SecretStr) -> str:
        value = plain.get_secret_value() if isinstance(plain, SecretStr) else plain
        return PREFIX + self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, stored: str) -> SecretStr:
        if not stored.startswith(PREFIX):
            raise ConfigError("stored secret is not encrypted with Inflow's secret box")
        try:
            return SecretStr(self._fernet.decrypt(stored[len(PREFIX) :].encode()).decode())
        except InvalidToken as exc:
            raise ConfigError(
                "stored secret cannot be decrypted: INFLOW_SECRET_KEY differs from the one used"
            ) from exc

    @staticmethod
    def is_encrypted(value: str) -> bool:
        return value.startswith(PREFIX)


def new_key() -> str:
    """A fresh Fernet key, as INFLOW_SECRET_KEY takes it."""
    return Fernet.generate_key().decode()


def load_or_create_key(path: Path) -> bytes:
    """Read the key file, creating it (mode 0600) on first use."""
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key
