"""Settings: environment, the YAML file with ${ENV} references, unknown keys rejected, secrets hidden."""

from __future__ import annotations

import pytest

from inflow.config.file import expand_env, load_config_file, parse_config_text
from inflow.config.secrets import SecretBox, load_or_create_key
from inflow.config.settings import KafkaSettings, PathSettings, S3Settings
from inflow.errors import ConfigError

GOOD = """
workspaces:
  - id: WS1
    api_key: ${WS1_KEY}
    identifiers: [customer_id, email]
    rate_limits: {users_per_minute: 100}
streams:
  - id: s1
"""


def test_yaml_with_env_reference_resolves_secret_and_masks_it():
    cfg = parse_config_text(GOOD, environ={"WS1_KEY": "s3cr3t-key"})
    ws = cfg.workspaces[0]
    assert ws.api_key is not None and ws.api_key.get_secret_value() == "s3cr3t-key"
    assert ws.rate_limits.users_per_minute == 100
    assert ws.rate_limits.events_per_minute == 30_000
    assert "s3cr3t-key" not in repr(cfg)
    assert "s3cr3t-key" not in str(cfg.model_dump(mode="json"))


def test_missing_env_reference_names_the_variable():
    with pytest.raises(ConfigError, match="WS1_KEY"):
        parse_config_text(GOOD, environ={})


def test_env_default_syntax():
    assert expand_env("a-${NOPE:-fallback}-b", {}) == "a-fallback-b"
    assert expand_env({"x": ["${A}"]}, {"A": "1"}) == {"x": ["1"]}


def test_unknown_keys_are_rejected_with_their_names():
    text = "workspaces:\n  - id: W\n    colour: blue\nstreems: []\n"
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, environ={})
    message = str(info.value)
    assert "unknown key 'workspaces.0.colour'" in message
    assert "unknown key 'streems'" in message


def test_more_than_five_identifiers_is_rejected():
    text = "workspaces:\n  - id: W\n    identifiers: [a, b, c, d, e, f]\n"
    with pytest.raises(ConfigError, match="identifiers"):
        parse_config_text(text, environ={})


def test_invalid_yaml_and_non_mapping_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config_text("a: [", environ={})
    with pytest.raises(ConfigError, match="mapping"):
        parse_config_text("- 1\n- 2\n", environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(tmp_path / "absent.yaml")


def test_embedded_defaults_load():
    cfg = load_config_file(None, environ={})
    assert [w.id for w in cfg.workspaces] == ["DEMO"]


def test_environment_settings(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:9093")
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", "acme")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("S3_SECRET_ACCESS_KEY", "very-secret")
    kafka = KafkaSettings()
    assert kafka.client_config()["bootstrap.servers"] == "broker:9093"
    assert kafka.topic("events") == "acme.events"
    assert kafka.producer_config()["acks"] == "all"
    assert kafka.producer_config()["enable.idempotence"] is True
    assert kafka.consumer_config("g")["enable.auto.commit"] is False
    assert "hunter2" not in repr(kafka)
    assert "very-secret" not in repr(S3Settings())


def test_unknown_init_keys_are_rejected():
    with pytest.raises(ValueError, match="bootstrap_server"):
        KafkaSettings(bootstrap_server="x")  # type: ignore[call-arg]


def test_secret_box_round_trip_and_wrong_key(tmp_path):
    box = SecretBox.from_settings(PathSettings(home=tmp_path))
    stored = box.encrypt("pgp-passphrase")
    assert stored.startswith("enc:v1:") and "pgp-passphrase" not in stored
    assert box.decrypt(stored).get_secret_value() == "pgp-passphrase"
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(tmp_path / "secret.key") == (tmp_path / "secret.key").read_bytes().strip()
    other = SecretBox.from_settings(PathSettings(home=tmp_path / "other"))
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        other.decrypt(stored)
    with pytest.raises(ConfigError, match="not encrypted"):
        box.decrypt("plain")
    with pytest.raises(ConfigError, match="Fernet"):
        SecretBox(b"short")


def test_an_empty_secret_key_says_how_to_fix_it():
    with pytest.raises(ConfigError, match="set but empty.*inflow config new-secret-key"):
        SecretBox(b"")


def test_a_malformed_secret_key_says_how_to_make_one():
    with pytest.raises(ConfigError, match="not a valid Fernet key.*new-secret-key"):
        SecretBox(b"not-a-key")


def test_new_secret_key_command_prints_a_working_key():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "inflow.cli", "config", "new-secret-key"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    box = SecretBox(result.stdout.strip().encode())
    assert box.decrypt(box.encrypt("x")).get_secret_value() == "x"


def test_docker_compose_shares_one_secret_key():
    """Every Inflow container gets INFLOW_SECRET_KEY from .env, or else the one file the image's entry point
    creates once in a shared volume (tests/test_compose.py runs that entry point)."""
    from pathlib import Path

    import yaml

    compose = yaml.safe_load((Path(__file__).resolve().parent.parent / "docker-compose.yml").read_text())
    inflow = [s for s in compose["services"].values() if s.get("image") == "inflow:local"]
    assert inflow
    for service in inflow:
        env = service["environment"]
        assert env["INFLOW_SECRET_KEY"] == "${INFLOW_SECRET_KEY:-}"
        assert env["INFLOW_SECRET_KEY_FILE"] == "/var/lib/inflow/keys/secret.key"
        assert "inflow-keys:/var/lib/inflow/keys" in service["volumes"]
