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
import io
import os
import shutil
import subprocess
import tempfile
import threading
import time
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
GPG_TIMED_OUT = "Unable to decrypt the file: GnuPG made no progress for"
GPG_TIMEOUT = 300.0
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

    A watchdog kills GnuPG when it makes no progress for ``timeout`` seconds while the caller waits on it
    (neither takes input nor gives output nor exits); :meth:`finish` then fails the file with that reason.
    Time the caller spends elsewhere (a slow broker between two reads) never counts.
    """

    def __init__(
        self, keyring: Keyring, source: Any, verify: bool = False, timeout: float = GPG_TIMEOUT
    ) -> None:
        self._keyring = keyring
        self._timeout = timeout
        self._progress_at = time.monotonic()
        self._waiting = verify  # the verify pass only waits for GnuPG; a data pass waits inside reads
        self.timed_out = False
        self._in_source = False
        self._done = threading.Event()
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
        self._watchdog = threading.Thread(target=self._watch, daemon=True)
        self._watchdog.start()
        self._stdout: IO[bytes] | None = None

    @property
    def stdout(self) -> IO[bytes]:
        """The plaintext; reads through it tell the watchdog when the caller waits on GnuPG."""
        if self._stdout is None:
            assert self._proc.stdout is not None
            self._stdout = io.BufferedReader(_WatchedPipe(self._proc.stdout, self), CHUNK)
        return self._stdout

    def _moved(self) -> None:
        self._progress_at = time.monotonic()

    def _watch(self) -> None:
        step = min(1.0, self._timeout / 4)
        while not self._done.wait(step):
            if self._proc.poll() is not None:
                return
            if not self._waiting or self._in_source:
                self._moved()  # the caller or S3 is slow: GnuPG waiting for them is not stuck
            elif time.monotonic() - self._progress_at > self._timeout:
                self.timed_out = True
                with contextlib.suppress(OSError):
                    self._proc.kill()
                return

    def _feed(self, source: Any) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            while True:
                self._in_source = True  # waiting on S3, not on GnuPG: S3's own timeouts apply
                try:
                    chunk = source.read(CHUNK)
                except BaseException as exc:  # S3 failed mid-stream: finish() raises it, not a PGP error
                    self._feed_error = exc
                    return
                self._in_source = False
                self._moved()
                if not chunk:
                    break
                if not self.head:
                    self.head = chunk[:64]
                stdin.write(chunk)
                self._moved()
        except (BrokenPipeError, ValueError, OSError):
            pass  # gpg stopped early (bad key, closed): finish() reports why
        finally:
            with contextlib.suppress(OSError, ValueError):
                stdin.close()

    @property
    def feed_error(self) -> BaseException | None:
        """The error that stopped reading the encrypted source (S3 failing mid-stream), if any."""
        return self._feed_error

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
        self._done.set()
        for thread in self._threads:
            thread.join(timeout=30)
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def finish(self) -> None:
        """Wait for GnuPG and turn its status lines into MoEngage's PGP errors."""
        self._waiting = True
        code = self._proc.wait()  # the watchdog kills a GnuPG that makes no progress
        self._done.set()
        for thread in self._threads:
            thread.join(timeout=60)
        if self.timed_out:
            raise PgpError(f"{GPG_TIMED_OUT} {self._timeout:g} s (gpg was stopped)")
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


class _WatchedPipe(io.RawIOBase):
    """GnuPG's stdout; marks the time the caller spends waiting in a read for the watchdog."""

    def __init__(self, pipe: IO[bytes], owner: DecryptStream) -> None:
        self._pipe = pipe
        self._owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        owner = self._owner
        owner._waiting = True
        try:
            data = self._pipe.read1(len(buffer))  # type: ignore[attr-defined]
        finally:
            owner._waiting = False
        owner._moved()
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._pipe.close()
        super().close()


def verify_then(keyring: Keyring, open_source: Callable[[], Any], timeout: float = GPG_TIMEOUT) -> None:
    """First pass when a signing key is set: decrypt to nowhere and check the signature."""
    stream = DecryptStream(keyring, open_source(), verify=True, timeout=timeout)
    stream.finish()
