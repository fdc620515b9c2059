"""``inflow imports ...`` and the YAML ``imports:`` section, through the real command line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from cryptography.fernet import Fernet

from inflow.config.secrets import SecretBox
from inflow.config.settings import KafkaSettings, PathSettings, S3Settings
from inflow.producers.s3_import.cli import sync_yaml_imports
from inflow.producers.s3_import.store import DefinitionStore
from inflow.runtime import Runtime
from inflow.schemas.serde import AvroSerde
from tests.s3_import.conftest import USER_MAPPINGS, repo_root


def inflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inflow.cli", *args],
        env=env | {"COLUMNS": "200"},
        cwd=repo_root(),
        capture_output=True,
        text=True,
        timeout=180,
    )


def definition_file(tmp_path: Path, s3_settings: S3Settings, bucket: str, name: str, **over: Any) -> Path:
    data = {
        "name": name,
        "workspace_id": "WS1",
        "type": "registered_users",
        "bucket": bucket,
        "folder": "cli",
        "access_key": s3_settings.access_key_id,
        "secret_key": s3_settings.secret_access_key.get_secret_value(),
        "endpoint_url": s3_settings.endpoint_url,
        "date_format": "yyyymmdd",
        "mappings": USER_MAPPINGS,
        "notify_emails": ["ops@example.com"],
    } | over
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_imports_commands_end_to_end(
    service_env: dict[str, str],
    catalogue_topics: KafkaSettings,
    s3_settings: S3Settings,
    bucket: str,
    put: Callable[..., None],
    tmp_path: Path,
    unique: str,
) -> None:
    env = service_env | {
        "INFLOW_SECRET_KEY": Fernet.generate_key().decode(),
        "INFLOW_POLLER_GROUP_ID": f"cli-{unique}",
    }
    secret = s3_settings.secret_access_key.get_secret_value()
    put(
        "cli/registered_user_data_20240101.csv",
        "ID,First Name\n" + "".join(f"u{i},N{i}\n" for i in range(3000)),
    )
    path = definition_file(tmp_path, s3_settings, bucket, f"cli-{unique}")

    preview = inflow(env, "imports", "preview", "--file", str(path))
    assert preview.returncode == 0, preview.stderr + preview.stdout
    assert "registered_user_data_20240101.csv" in preview.stdout and "N0" in preview.stdout

    added = inflow(env, "imports", "add", str(path))
    assert added.returncode == 0, added.stdout + added.stderr
    again = inflow(
        env, "imports", "add", str(definition_file(tmp_path, s3_settings, bucket, f"dup-{unique}"))
    )
    assert again.returncode == 2 and f"is a duplicate of import cli-{unique}" in again.stdout
    bad = inflow(
        env, "imports", "add", str(definition_file(tmp_path, s3_settings, bucket, "bad", folder="x/"))
    )
    assert bad.returncode == 2 and "trailing slash" in bad.stdout

    listed = inflow(env, "imports", "list")
    assert f"cli-{unique}" in listed.stdout and "SCHEDULED" in listed.stdout

    run = inflow(env, "imports", "run", f"cli-{unique}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "registered_user_data_20240101.csv: SUCCESSFUL rows 3000 added 3000" in run.stdout

    shown = inflow(env, "imports", "show", f"cli-{unique}")
    assert shown.returncode == 0 and "SUCCESSFUL" in shown.stdout and "3000" in shown.stdout
    assert secret not in shown.stdout + listed.stdout + run.stdout + added.stdout
    assert "**********" in shown.stdout

    assert inflow(env, "imports", "archive", f"cli-{unique}").returncode == 0
    assert "ARCHIVED" in inflow(env, "imports", "list").stdout
    missing = inflow(env, "imports", "show", "nope")
    assert missing.returncode == 2 and "no import named 'nope'" in missing.stdout


def test_every_command_has_help(service_env: dict[str, str]) -> None:
    for args in (
        ["poller"],
        ["imports"],
        *[["imports", c] for c in ("add", "list", "show", "preview", "run", "archive")],
    ):
        result = inflow(service_env, *args, "--help")
        assert result.returncode == 0 and "Usage" in result.stdout, args


def test_yaml_imports_are_written_to_the_control_topic(
    catalogue_topics: KafkaSettings,
    s3_settings: S3Settings,
    bucket: str,
    tmp_path: Path,
    unique: str,
) -> None:
    data = yaml.safe_load(definition_file(tmp_path, s3_settings, bucket, f"yaml-{unique}").read_text())
    data["secret_key"] = "${IMPORT_SECRET_FOR_TEST:-from-env-default}"
    config = tmp_path / "inflow.yaml"
    config.write_text(yaml.safe_dump({"imports": [data]}))
    rt = Runtime(paths=PathSettings(config=config, home=tmp_path / "home"), kafka_settings=catalogue_topics)
    box = SecretBox(Fernet.generate_key())
    store = DefinitionStore(catalogue_topics, AvroSerde(), box)
    assert sync_yaml_imports(rt, store) == [f"yaml-{unique}"]
    assert sync_yaml_imports(rt, store) == []  # unchanged: nothing written
    fresh = DefinitionStore(catalogue_topics, AvroSerde(), box)
    assert fresh.get(f"yaml-{unique}").secret_key.get_secret_value() == "from-env-default"
