"""PGP decryption (of files encrypted as MoEngage's PGP guide says) streamed through GnuPG, so a large file
is never held in memory.

pgpy parses a whole message in memory, so files go through a ``gpg --decrypt`` subprocess instead: a thread
feeds it the S3 stream, the caller reads plaintext from its stdout as it comes, and GnuPG's machine-readable
status lines decide the outcome. Each run uses its own temporary ``GNUPGHOME`` holding only the import's
keys, removed afterwards. When a signing key is configured, the signature is checked in a first streaming
pass before any row is read, because GnuPG can only report a bad signature after the last byte.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from typing import IO, Any

from inflow.producers.s3_import.definition import PgpConfig
from inflow.producers.s3_import.exceptions import PgpError

DECRYPTION_KEY_MISSING = "Decryption key is missing"
DECRYPTION_KEY_WRONG = "Decryption key is wrong"
SIGNING_KEY_MISSING = "Signing key missing"
SIGNING_KEY_WRONG = "Signing key is wrong"
VERIFICATION_FAILED = "Signing key verification failed"
UNABLE_TO_DECRYPT = "Unable to decrypt the file"
NOT_ENCRYPTED = "File is not in encrypted format"
IS_ENCRYPTED = "File is in encrypted format, please set up PGP encryption"
GPG = shutil.which("gpg") or "/usr/bin/gpg"
CHUNK = 1 << 20
_BASE = ["--batch", "--no-tty", "--quiet", "--no-auto-key-retrieve", "--trust-model", "always"]


def looks_encrypted(head: bytes) -> bool:
    """True when the first bytes are an armored PGP message or a binary OpenPGP packet header."""
    if head.lstrip().startswith(b"-----BEGIN PGP MESSAGE-----"):
        return True
    if not head:
        return False
    tag = head[0]
    if not tag & 0x80:
        return False
    packet = (tag & 0x3F) if tag & 0x40 else ((tag >> 2) & 0x0F)
    return packet in (1, 3, 8, 18)  # PKESK, SKESK, compressed, SEIPD


class Keyring:
    """A temporary GNUPGHOME with the import's private key and optional signing public key."""

    def __init__(self, config: PgpConfig | None) -> None:
        if config is None or not config.decryption_key.get_secret_value().strip():
            raise PgpError(DECRYPTION_KEY_MISSING)
        self.config = config
        self.home = tempfile.mkdtemp(prefix="inflow-gpg-")
        os.chmod(self.home, 0o700)
        self.signing_fingerprints: set[str] = set()
        try:
            if not self._import(config.decryption_key.get_secret_value(), secret=True):
                raise PgpError(f"{DECRYPTION_KEY_WRONG}: it is not a PGP private key")
            if config.signing_key:
                self.signing_fingerprints = self._import(config.signing_key, secret=False)
                if not self.signing_fingerprints:
                    raise PgpError(f"{SIGNING_KEY_WRONG}: it is not a PGP public key")
        except BaseException:
            self.close()
            raise

    def _import(self, armored: str, secret: bool) -> set[str]:
        """Import a key; returns the fingerprints GnuPG reports (empty when nothing usable was imported)."""
        proc = subprocess.run(
            [GPG, "--homedir", self.home, *_BASE, "--status-fd", "1", "--import"],
            input=armored.encode(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        fingerprints = set()
        has_secret = False
        for line in proc.stdout.decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "IMPORT_OK":
                fingerprints.add(parts[3])
                has_secret = has_secret or bool(int(parts[2]) & 16)
        if secret and not has_secret:
            return set()
        return fingerprints

    def gpg_command(self, *args: str) -> list[str]:
        return [GPG, "--homedir", self.home, *_BASE, *args]

    def close(self) -> None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                ["gpgconf", "--homedir", self.home, "--kill", "gpg-agent"],
                capture_output=True,
                timeout=10,
                check=False,
            )
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> Keyring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DecryptStream:
    """``gpg --decrypt`` fed from ``source`` in a thread; read plaintext from :attr:`stdout`.

    Call :meth:`finish` after reading everything: it raises :class:`PgpError` with MoEngage's message
    when GnuPG reported a failure. :meth:`close` stops the process early (preview reads only five rows).
    """

    def __init__(self, keyring: Keyring, source: Any, verify: bool = False) -> None:
        self._keyring = keyring
        status_r, status_w = os.pipe()
        pass_r, pass_w = os.pipe()
        self._proc = subprocess.Popen(
            keyring.gpg_command(
                "--pinentry-mode",
                "loopback",
                "--passphrase-fd",
                str(pass_r),
                "--status-fd",
                str(status_w),
                "--decrypt",
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL if verify else subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(status_w, pass_r),
        )
        os.close(status_w)
        os.close(pass_r)
        with os.fdopen(pass_w, "wb") as handle:
            handle.write(keyring.config.passphrase.get_secret_value().encode() + b"\n")
        self.status: list[str] = []
        self.stderr = b""
        self.head = b""
        self._feed_error: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._feed, args=(source,), daemon=True),
            threading.Thread(target=self._read_status, args=(status_r,), daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def stdout(self) -> IO[bytes]:
        assert self._proc.stdout is not None
        return self._proc.stdout

    def _feed(self, source: Any) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            while chunk := source.read(CHUNK):
                if not self.head:
                    self.head = chunk[:64]
                stdin.write(chunk)
        except (BrokenPipeError, ValueError, OSError):
            pass  # gpg stopped early (bad key, closed): finish() reports why
        except BaseException as exc:  # a read error from S3 is reported by finish()
            self._feed_error = exc
        finally:
            with contextlib.suppress(OSError, ValueError):
                stdin.close()

    def _read_status(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as handle:
            for line in handle:
                self.status.append(line.decode(errors="replace").strip())

    def _read_stderr(self) -> None:
        assert self._proc.stderr is not None
        self.stderr = self._proc.stderr.read()[-4000:]

    def close(self) -> None:
        """Stop GnuPG early and release its pipes."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait(timeout=30)
        for thread in self._threads:
            thread.join(timeout=30)
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def finish(self) -> None:
        """Wait for GnuPG and turn its status lines into MoEngage's PGP errors."""
        code = self._proc.wait(timeout=600)
        for thread in self._threads:
            thread.join(timeout=60)
        if self._feed_error is not None:
            raise self._feed_error
        check_status(
            self.status, code, self._keyring.signing_fingerprints, self.stderr, looks_encrypted(self.head)
        )


def check_status(
    status: list[str], code: int, signers: set[str], stderr: bytes = b"", head_encrypted: bool = True
) -> None:
    """Decide the outcome from ``[GNUPG:]`` status keywords (GnuPG's doc/DETAILS).

    ENC_TO without KEY_CONSIDERED: encrypted for a key we lack. KEY_CONSIDERED without DECRYPTION_KEY:
    the key is there but its passphrase did not unlock it. DECRYPTION_KEY without DECRYPTION_OKAY: the
    session key was recovered but the data is damaged. Without a signing key, the signature is optional.
    """
    words = {line.split()[1] for line in status if line.startswith("[GNUPG:]") and len(line.split()) > 1}
    detail = stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"gpg exit code {code}"]
    if not words & {"ENC_TO", "BEGIN_DECRYPTION", "DECRYPTION_OKAY", "DECRYPTION_KEY"}:
        if head_encrypted:
            raise PgpError(f"{UNABLE_TO_DECRYPT}: the PGP message is damaged or truncated ({detail[0]})")
        raise PgpError(NOT_ENCRYPTED)
    if "DECRYPTION_OKAY" not in words or "DECRYPTION_FAILED" in words:
        if "DECRYPTION_KEY" in words:
            raise PgpError(f"{UNABLE_TO_DECRYPT}: the PGP message is damaged or truncated ({detail[0]})")
        if "KEY_CONSIDERED" in words:
            raise PgpError(f"{UNABLE_TO_DECRYPT}: wrong key passphrase")
        if "ENC_TO" in words:
            raise PgpError(f"{DECRYPTION_KEY_WRONG}: the file is encrypted for another key")
        raise PgpError(f"{UNABLE_TO_DECRYPT}: {detail[0]}")
    if "BADSIG" in words:
        raise PgpError(f"{VERIFICATION_FAILED}: bad signature")
    if signers:
        check_signature(status, signers)


def check_signature(status: list[str], signers: set[str]) -> None:
    """A VALIDSIG from the configured signing key is required; anything else fails verification."""
    fields = [line.split()[1:] for line in status if line.startswith("[GNUPG:]")]
    if any(f[0] == "BADSIG" for f in fields):
        raise PgpError(f"{VERIFICATION_FAILED}: bad signature")
    if any(f[0] == "ERRSIG" for f in fields):
        raise PgpError(f"{VERIFICATION_FAILED}: the file is signed by a key other than the signing key")
    valid = [f for f in fields if f[0] == "VALIDSIG"]
    if not valid:
        raise PgpError(f"{VERIFICATION_FAILED}: the file is not signed")
    if not any(f[1] in signers or (len(f) > 10 and f[10] in signers) for f in valid):
        raise PgpError(f"{VERIFICATION_FAILED}: the file is signed by a key other than the signing key")


def verify_then(keyring: Keyring, open_source: Callable[[], Any]) -> None:
    """First pass when a signing key is set: decrypt to nowhere and check the signature."""
    stream = DecryptStream(keyring, open_source(), verify=True)
    stream.finish()
