"""Fixtures of the S3 import tests: a bucket per test, real PGP keys, a real SMTP server, pollers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from cryptography.fernet import Fernet

from inflow.config.secrets import SecretBox
from inflow.config.settings import KafkaSettings, S3Settings
from inflow.local.process import free_port
from inflow.local.s3 import boto3_client
from inflow.producers.s3_import.definition import ImportDefinition, parse_definition
from inflow.producers.s3_import.poller import Poller
from inflow.producers.s3_import.settings import PollerSettings, SmtpSettings
from tests.s3_import.pgp_keys import GpgWorkbench, KeyPair


class Inbox:
    """aiosmtpd handler that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd API
        self.messages.append(
            {"to": list(envelope.rcpt_tos), "body": envelope.content.decode("utf-8", "replace")}
        )
        return "250 OK"


@pytest.fixture(scope="session")
def smtp_inbox() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture(scope="session")
def gpg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgWorkbench]:
    bench = GpgWorkbench(tmp_path_factory.mktemp("gpg"))
    yield bench
    bench.close()


@pytest.fixture(scope="session")
def keys(gpg: GpgWorkbench) -> dict[str, KeyPair]:
    """Three real ed25519/cv25519 key pairs: the recipient, another recipient, and a signer."""
    return {name: gpg.key_pair(f"{name} <{name}@inflow.test>") for name in ("alice", "bob", "signer")}


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(Fernet.generate_key())


@pytest.fixture
def s3(s3_settings: S3Settings) -> Any:
    return boto3_client(s3_settings, str(s3_settings.endpoint_url))


@pytest.fixture
def bucket(s3: Any, unique: str) -> str:
    name = f"imp-{unique}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def put(s3: Any, bucket: str) -> Callable[[str, bytes | str], None]:
    def upload(key: str, body: bytes | str) -> None:
        s3.put_object(Bucket=bucket, Key=key, Body=body.encode() if isinstance(body, str) else body)

    return upload


USER_MAPPINGS = [
    {"column": "ID", "moe_attr": "uid"},
    {"column": "First Name", "moe_attr": "u_fn"},
    {"column": "LTV", "moe_attr": "t_rev", "type": "double"},
    {"column": "Installed", "moe_attr": "installed", "type": "bool"},
    {
        "column": "First Seen",
        "moe_attr": "cr_t",
        "type": "datetime",
        "datetime_format": "YYYY-MM-DD hh:mm:ss",
    },
]
EVENT_MAPPINGS = [
    {"column": "user", "moe_attr": "uid"},
    {
        "column": "time",
        "moe_attr": "event_time",
        "type": "datetime",
        "datetime_format": "YYYY-MM-DDThh:mm:ssTZD",
    },
    {"column": "amount", "moe_attr": "amount", "type": "double"},
    {"column": "tags", "moe_attr": "tags"},
]


@pytest.fixture
def definition(s3_settings: S3Settings, bucket: str, unique: str) -> Callable[..., ImportDefinition]:
    """A valid definition for this test's bucket; keyword arguments override fields."""

    def make(**overrides: Any) -> ImportDefinition:
        data: dict[str, Any] = {
            "name": f"users-{unique}",
            "workspace_id": "WS1",
            "type": "registered_users",
            "bucket": bucket,
            "folder": "in/users",
            "access_key": s3_settings.access_key_id,
            "secret_key": s3_settings.secret_access_key.get_secret_value(),
            "endpoint_url": s3_settings.endpoint_url,
            "date_format": "yyyymmdd",
            "mappings": USER_MAPPINGS,
        }
        data.update(overrides)
        return parse_definition(data)

    return make


@pytest.fixture
def poller_factory(
    catalogue_topics: KafkaSettings, box: SecretBox, smtp_inbox: tuple[Inbox, int], unique: str
) -> Iterator[Callable[..., Poller]]:
    made: list[Poller] = []

    def make(**settings: Any) -> Poller:
        poller = Poller(
            catalogue_topics,
            box,
            # Outcome tracking off unless a test turns it on: those tests look at the write phase, with
            # no processors running (test_run_history.py drives the apply phase).
            settings=PollerSettings(
                **({"group_id": f"pollers-{unique}", "track_outcomes": False} | settings)
            ),
            smtp=SmtpSettings(host="127.0.0.1", port=smtp_inbox[1]),
        )
        made.append(poller)
        assert poller.wait_for_partitions(90), "poller got no ledger partitions"
        return poller

    yield make
    for poller in made:
        poller.close()


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]
