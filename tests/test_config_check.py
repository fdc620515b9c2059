"""``inflow config check`` validates every section with its typed model and never prints a secret."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

SECRETS = {
    "workspace key": "ws-key-0123456789",
    "stream password": "stream-pass-0123456789",
    "stream header value": "hdr-value-0123456789",
    "stream auth header value": "auth-hdr-0123456789",
    "url token": "url-token-0123456789",
    "url password": "url-pass-0123456789",
    "s3 secret key": "s3-secret-0123456789",
    "pgp private key": "PGP-PRIVATE-KEY-BLOCK-0123456789",
    "pgp passphrase": "pgp-pass-0123456789",
}


def _imports() -> list[dict]:
    return [
        {
            "name": "users",
            "workspace_id": "W1",
            "type": "registered_users",
            "bucket": "b",
            "folder": "in/users",
            "access_key": "AK",
            "secret_key": SECRETS["s3 secret key"],
            "date_format": "yyyymmdd",
            "encrypted": True,
            "pgp": {"decryption_key": SECRETS["pgp private key"], "passphrase": SECRETS["pgp passphrase"]},
            "mappings": [{"column": "ID", "moe_attr": "uid"}],
        }
    ]


def _check(tmp_path: Path, config: dict) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "inflow.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {
        "INFLOW_CONFIG": str(path),
        "INFLOW_HOME": str(tmp_path / "home"),
        "PATH": "/usr/bin:/bin",
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "inflow.cli", "config", "check"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _streams() -> list[dict]:
    return [
        {
            "id": "basic",
            "url": f"http://user:{SECRETS['url password']}@127.0.0.1:9/in?token={SECRETS['url token']}",
            "workspace_id": "W1",
            "headers": {"X-Api-Key": SECRETS["stream header value"]},
            "auth": {"type": "basic", "username": "u", "password": SECRETS["stream password"]},
        },
        {
            "id": "header",
            "url": "http://127.0.0.1:9/other",
            "auth": {
                "type": "header",
                "header_name": "Authorization",
                "header_value": SECRETS["stream auth header value"],
            },
        },
    ]


def test_config_check_masks_every_secret_of_every_section(tmp_path: Path) -> None:
    result = _check(
        tmp_path,
        {
            "workspaces": [{"id": "W1", "api_key": SECRETS["workspace key"]}],
            "streams": _streams(),
            "imports": _imports(),
        },
    )
    assert result.returncode == 0, result.stderr + result.stdout
    for what, value in SECRETS.items():
        assert value not in result.stdout + result.stderr, f"{what} printed in clear"
    assert "**********" in result.stdout
    assert "OK" in result.stdout and "2 streams" in result.stdout and "1 imports" in result.stdout


def test_config_check_names_a_bad_stream_entry(tmp_path: Path) -> None:
    bad = _streams()
    bad[1]["auth"]["header_value"] = "line\r\nInjected: yes"
    result = _check(tmp_path, {"streams": bad})
    assert result.returncode != 0
    assert "streams[1]" in result.stdout + result.stderr
    assert "Injected: yes" not in result.stdout + result.stderr


def test_config_check_names_a_bad_import_entry(tmp_path: Path) -> None:
    bad = _imports()
    bad[0]["folder"] = "/in"
    result = _check(tmp_path, {"imports": bad})
    assert result.returncode != 0
    assert "imports[0]" in result.stdout + result.stderr and "must not start with a slash" in result.stdout
    assert SECRETS["s3 secret key"] not in result.stdout + result.stderr
