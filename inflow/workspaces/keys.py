"""Data API keys: generated, stored only as a salted scrypt hash, verified in constant time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCHEME = "scrypt"
# scrypt cost: about 30-60 ms per verification on one core; verified keys are cached by the authenticator.
N, R, P = 2**14, 8, 1


def generate_key() -> str:
    """A new data API key: 32 random bytes, url-safe."""
    return secrets.token_urlsafe(32)


def hash_key(key: str, *, n: int = N, r: int = R, p: int = P) -> str:
    """Self-describing hash text: ``scrypt$n=..,r=..,p=..$salt$digest`` (base64)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(key.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"{SCHEME}$n={n},r={r},p={p}${_b64(salt)}${_b64(digest)}"


def verify_key(key: str, stored: str) -> bool:
    """Recompute the hash with the stored parameters and compare in constant time; False if malformed."""
    try:
        scheme, params, salt_text, digest_text = stored.split("$")
        cost = dict(item.split("=") for item in params.split(","))
        n, r, p = int(cost["n"]), int(cost["r"]), int(cost["p"])
        salt, expected = _unb64(salt_text), _unb64(digest_text)
    except (ValueError, KeyError):
        return False
    if scheme != SCHEME:
        return False
    digest = hashlib.scrypt(
        key.encode("utf-8", "surrogatepass"), salt=salt, n=n, r=r, p=p, dklen=len(expected)
    )
    return hmac.compare_digest(digest, expected)


def fingerprint(key: str) -> bytes:
    """Fast digest of a presented key, used only as the in-memory cache entry of a verified key."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
