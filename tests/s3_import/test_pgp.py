"""PGP-encrypted files with real GnuPG keys: armored and binary, signed, and every error message."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from inflow.config.settings import KafkaSettings
from inflow.producers.s3_import.definition import PgpConfig
from inflow.producers.s3_import.exceptions import PgpError
from inflow.producers.s3_import.importer import FileImport, ImportContext, row_producer
from inflow.producers.s3_import.pgp import DecryptStream, Keyring, looks_encrypted
from inflow.producers.s3_import.poller import Poller
from inflow.producers.s3_import.runs import RunRecord
from inflow.producers.s3_import.storage import FILE_CHANGED, Folder, S3File
from inflow.schemas.serde import AvroSerde
from tests.s3_import.pgp_keys import GpgWorkbench, KeyPair
from tests.support import consume_n, consume_until_quiet

PLAIN = b"ID,First Name\nu1,Ann\nu2,Bob\n"


def config(key: KeyPair, passphrase: str | None = None, signer: KeyPair | None = None) -> PgpConfig:
    return PgpConfig(
        decryption_key=SecretStr(key.private),
        passphrase=SecretStr(key.passphrase if passphrase is None else passphrase),
        signing_key=signer.public if signer else None,
    )


def decrypt(data: bytes, cfg: PgpConfig) -> bytes:
    with Keyring(cfg) as keyring:
        stream = DecryptStream(keyring, io.BytesIO(data))
        out = stream.stdout.read()
        stream.finish()
        return out


@pytest.mark.parametrize("armor", [True, False])
def test_decrypts_armored_and_binary_and_verifies_the_signer(
    gpg: GpgWorkbench, keys: dict[str, KeyPair], armor: bool
) -> None:
    data = gpg.encrypt(PLAIN, keys["alice"], signer=keys["signer"], armor=armor)
    assert looks_encrypted(data[:64]) and not looks_encrypted(PLAIN[:64])
    assert decrypt(data, config(keys["alice"])) == PLAIN
    assert decrypt(data, config(keys["alice"], signer=keys["signer"])) == PLAIN


def test_streams_a_file_larger_than_pipe_buffers(gpg: GpgWorkbench, keys: dict[str, KeyPair]) -> None:
    big = b"ID,n\n" + b"".join(b"u%d,%d\n" % (i, i) for i in range(300_000))
    data = gpg.encrypt(big, keys["alice"], armor=False)
    with Keyring(config(keys["alice"])) as keyring:
        stream = DecryptStream(keyring, io.BytesIO(data))
        total = 0
        while chunk := stream.stdout.read(65536):
            total += len(chunk)
        stream.finish()
    assert total == len(big)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("wrong_key", "Decryption key is wrong: the file is encrypted for another key"),
        ("wrong_passphrase", "Unable to decrypt the file: wrong key passphrase"),
        (
            "wrong_signer",
            "Signing key verification failed: the file is signed by a key other than the signing key",
        ),
        ("unsigned", "Signing key verification failed: the file is not signed"),
        ("not_encrypted", "File is not in encrypted format"),
        ("damaged", "Unable to decrypt the file: the PGP message is damaged or truncated"),
        ("not_a_private_key", "Decryption key is wrong: it is not a PGP private key"),
        ("public_key_as_private", "Decryption key is wrong: it is not a PGP private key"),
        ("bad_signing_key", "Signing key is wrong: it is not a PGP public key"),
        ("missing_key", "Decryption key is missing"),
    ],
)
def test_pgp_error_messages(gpg: GpgWorkbench, keys: dict[str, KeyPair], case: str, message: str) -> None:
    alice, bob, signer = keys["alice"], keys["bob"], keys["signer"]
    signed = gpg.encrypt(PLAIN, alice, signer=signer)
    data, cfg = signed, config(alice)
    if case == "wrong_key":
        cfg = config(bob)
    elif case == "wrong_passphrase":
        cfg = config(alice, passphrase="not it")
    elif case == "wrong_signer":
        cfg = config(alice, signer=bob)
    elif case == "unsigned":
        data, cfg = gpg.encrypt(PLAIN, alice), config(alice, signer=signer)
    elif case == "not_encrypted":
        data = PLAIN
    elif case == "damaged":
        data = signed[: len(signed) // 2]
    elif case == "not_a_private_key":
        cfg = PgpConfig(decryption_key=SecretStr("not a key"), passphrase=SecretStr("x"))
    elif case == "public_key_as_private":
        cfg = PgpConfig(decryption_key=SecretStr(alice.public), passphrase=SecretStr("x"))
    elif case == "bad_signing_key":
        cfg = config(alice).model_copy(update={"signing_key": "junk"})
    elif case == "missing_key":
        cfg = PgpConfig(decryption_key=SecretStr(" "), passphrase=SecretStr("x"))
    with pytest.raises(PgpError) as info:
        decrypt(data, cfg)
    assert str(info.value).startswith(message)


def test_encrypted_signed_import_end_to_end_and_failures_import_nothing(
    gpg: GpgWorkbench,
    keys: dict[str, KeyPair],
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
    catalogue_topics: KafkaSettings,
    consumer_factory: Callable[..., Any],
    unique: str,
) -> None:
    alice, bob, signer = keys["alice"], keys["bob"], keys["signer"]
    pgp = {"decryption_key": alice.private, "passphrase": alice.passphrase, "signing_key": signer.public}
    d = definition(encrypted=True, pgp=pgp, date_format="ddmmyyyy")
    put("in/users/registered_user_data_01012024.csv.asc", gpg.encrypt(PLAIN, alice, signer=signer))
    put(
        "in/users/registered_user_data_02012024.csv.pgp",
        gpg.encrypt(PLAIN, alice, signer=signer, armor=False),
    )
    put("in/users/registered_user_data_03012024.csv.asc", gpg.encrypt(PLAIN, alice, signer=bob))
    put("in/users/registered_user_data_04012024.csv.asc", gpg.encrypt(PLAIN, bob, signer=signer))
    put("in/users/registered_user_data_05012024.csv.pgp", PLAIN)
    put("in/users/registered_user_data_06012024.csv", PLAIN)  # not .asc/.pgp: not this import's file
    plain = definition(name=f"plain-{unique}", folder="in/plain", date_format="ddmmyyyy")
    put("in/plain/registered_user_data_01012024.csv", gpg.encrypt(PLAIN, alice))
    poller = poller_factory()
    runs = {r.file_name: r for r in poller.run_import(d).files}
    assert sorted(runs) == [
        f"registered_user_data_0{i}012024.csv.{e}"
        for i, e in ((1, "asc"), (2, "pgp"), (3, "asc"), (4, "asc"), (5, "pgp"))
    ]
    statuses = [(r.status, r.message) for _, r in sorted(runs.items())]
    assert statuses == [
        ("SUCCESSFUL", ""),
        ("SUCCESSFUL", ""),
        ("FAILED", "Signing key verification failed: the file is signed by a key other than the signing key"),
        ("FAILED", "Decryption key is wrong: the file is encrypted for another key"),
        ("FAILED", "File is not in encrypted format"),
    ]
    (wrong,) = poller.run_import(plain).files
    assert (wrong.status, wrong.message) == (
        "FAILED",
        "File is in encrypted format, please set up PGP encryption",
    )
    consumer = consumer_factory([catalogue_topics.topic("ingest.records")])
    msgs = consume_n(consumer, 4) + consume_until_quiet(consumer, quiet=3)
    assert len(msgs) == 4  # two good files of two rows; the failed files produced nothing


class ReplacingFolder(Folder):
    """The real folder; right before the second read of the file (the data, after the signature check) a
    real upload replaces the object with data that is encrypted but not signed."""

    def __init__(self, d: Any, replacement: bytes) -> None:
        super().__init__(d)
        self.replacement = replacement
        self.opened = 0

    def open(self, file: S3File) -> Any:
        self.opened += 1
        if self.opened == 2:
            self._client.put_object(Bucket=self.bucket, Key=file.key, Body=self.replacement)
        return super().open(file)


def test_a_file_replaced_between_signature_check_and_read_fails(
    gpg: GpgWorkbench,
    keys: dict[str, KeyPair],
    definition: Callable[..., Any],
    put: Callable[..., None],
    catalogue_topics: KafkaSettings,
    consumer_factory: Callable[..., Any],
) -> None:
    alice, signer = keys["alice"], keys["signer"]
    pgp = {"decryption_key": alice.private, "passphrase": alice.passphrase, "signing_key": signer.public}
    d = definition(encrypted=True, pgp=pgp, date_format="ddmmyyyy")
    put("in/users/registered_user_data_01012024.csv.asc", gpg.encrypt(PLAIN, alice, signer=signer))
    folder = ReplacingFolder(d, gpg.encrypt(b"ID,First Name\nevil,Eve\n", alice))  # not signed
    (file,) = folder.list_files()
    run = RunRecord("run-1", d.name, f"{d.bucket}/{d.folder}", file.name, file.size, datetime.now(UTC))
    out = row_producer(catalogue_topics)
    try:
        result = FileImport(d, folder, file, run, out, AvroSerde(), ImportContext()).run()
    finally:
        out.close()
    assert folder.opened == 2  # the signature check, then the data
    assert (result.status, result.rows_added) == ("FAILED", 0)
    assert result.message == f"{FILE_CHANGED} (it is no longer ETag {file.etag})"
    consumer = consumer_factory([catalogue_topics.topic("ingest.records")])
    assert consume_until_quiet(consumer, quiet=3) == []  # nothing of either version was imported
