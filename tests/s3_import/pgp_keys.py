"""Real PGP key pairs and encrypted files for tests, made with GnuPG in a throwaway home."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

BASE = ["gpg", "--batch", "--no-tty", "--quiet", "--pinentry-mode", "loopback", "--trust-model", "always"]


@dataclass(frozen=True)
class KeyPair:
    """An exported key pair: armored private key, public key, passphrase, fingerprint."""

    uid: str
    private: str
    public: str
    passphrase: str
    fingerprint: str


class GpgWorkbench:
    """A GNUPGHOME that generates keys and encrypts/signs files the way MoEngage's PGP guide says."""

    def __init__(self, root: Path) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="gpgt-", dir="/tmp"))
        self.home.chmod(0o700)
        self.root = root

    def run(self, *args: str, data: bytes | None = None) -> bytes:
        proc = subprocess.run(
            [*BASE, "--homedir", str(self.home), *args],
            input=data,
            capture_output=True,
            check=True,
            timeout=120,
        )
        return proc.stdout

    def key_pair(self, uid: str, passphrase: str = "s3cret pass") -> KeyPair:
        self.run("--passphrase", passphrase, "--quick-gen-key", uid, "future-default", "default", "never")
        colons = self.run("--with-colons", "--list-keys", uid).decode()
        fpr = next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr"))
        private = self.run("--passphrase", passphrase, "--armor", "--export-secret-keys", fpr).decode()
        public = self.run("--armor", "--export", fpr).decode()
        return KeyPair(uid, private, public, passphrase, fpr)

    def encrypt(
        self, data: bytes, recipient: KeyPair, signer: KeyPair | None = None, armor: bool = True
    ) -> bytes:
        args = ["--compress-algo", "none", "--encrypt", "-r", recipient.fingerprint]
        if signer is not None:
            args = ["--passphrase", signer.passphrase, "--local-user", signer.fingerprint, "--sign", *args]
        if armor:
            args = ["--armor", *args]
        return self.run(*args, data=data)

    def encrypt_file(self, src: Path, dst: Path, recipient: KeyPair, signer: KeyPair | None = None) -> None:
        args = ["--compress-algo", "none", "--output", str(dst), "--encrypt", "-r", recipient.fingerprint]
        if signer is not None:
            args = ["--passphrase", signer.passphrase, "--local-user", signer.fingerprint, "--sign", *args]
        self.run("--yes", *args, str(src))

    def close(self) -> None:
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"], capture_output=True, check=False
        )
        subprocess.run(["rm", "-rf", str(self.home)], check=False)
