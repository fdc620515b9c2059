"""``inflow console token create|list|revoke`` as a user runs them, against a real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inflow.config.settings import KafkaSettings
from inflow.console.audit import AuditLog
from inflow.console.exceptions import TokenError
from inflow.console.tokens import TokenStore
from inflow.schemas.serde import AvroSerde


def inflow(kafka: KafkaSettings, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "S3_", "INFLOW_"))} | {
        "KAFKA_BOOTSTRAP_SERVERS": str(kafka.bootstrap_servers),
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "INFLOW_HOME": str(home),
        "COLUMNS": "200",
    }
    argv = [sys.executable, "-m", "inflow.cli", "console", "token", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_token_create_prints_it_once_and_stores_only_its_digest(catalogue_topics, tmp_path):
    made = inflow(catalogue_topics, tmp_path, "create", "ops", "--role", "admin")
    assert made.returncode == 0, made.stderr
    printed = json.loads(made.stdout)
    assert printed["name"] == "ops" and printed["role"] == "admin" and len(printed["token"]) > 40

    serde = AvroSerde()
    tokens = TokenStore(catalogue_topics, serde).load()
    assert tokens.verify(printed["token"]).name == "ops"
    assert all(printed["token"] not in repr(t) for t in tokens.all())

    listed = inflow(catalogue_topics, tmp_path, "list")
    assert (
        json.loads(listed.stdout.splitlines()[0])["name"] == "ops" and printed["token"] not in listed.stdout
    )

    taken = inflow(catalogue_topics, tmp_path, "create", "ops")
    assert taken.returncode == 2 and "admin token 'ops' exists; revoke it first" in taken.stdout
    bad = inflow(catalogue_topics, tmp_path, "create", "x", "--role", "owner")
    assert bad.returncode == 2 and "role must be one of admin, read, not 'owner'" in bad.stdout

    assert inflow(catalogue_topics, tmp_path, "revoke", "ops").returncode == 0
    assert TokenStore(catalogue_topics, serde).load().verify(printed["token"]) is None
    missing = inflow(catalogue_topics, tmp_path, "revoke", "ops")
    assert missing.returncode == 2 and "no live admin token named 'ops'" in missing.stdout

    records = AuditLog(catalogue_topics, serde).recent()
    assert [(r["actor"], r["action"], r["target"]) for r in records] == [
        ("cli", "token.revoke", "ops"),
        ("cli", "token.create", "ops"),
    ]


def test_bootstrap_token_is_made_once_or_taken_from_the_environment(catalogue_topics):
    serde = AvroSerde()
    tokens = TokenStore(catalogue_topics, serde).load()
    first = tokens.bootstrap(None)
    assert first is not None and tokens.verify(first).role == "admin"
    again = TokenStore(catalogue_topics, serde).load()
    assert again.bootstrap(None) is None, "an admin token exists: nothing new is made or printed"

    given = "g" * 40
    assert again.bootstrap(given) is None
    reread = TokenStore(catalogue_topics, serde).load()
    assert reread.verify(given).name == "bootstrap" and reread.verify(first) is None
    with pytest.raises(TokenError, match="INFLOW_CONSOLE_TOKEN must be 32 to 200 random characters"):
        reread.bootstrap("short")
    for store in (tokens, again, reread):
        store.stop()
