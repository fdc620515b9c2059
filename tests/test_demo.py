"""``inflow up --demo`` end to end: the real command against the test broker and S3 server.

``inflow up`` takes the test's ``KAFKA_BOOTSTRAP_SERVERS`` and ``S3_ENDPOINT_URL`` (so it starts neither),
creates the catalogue under the test's topic prefix, starts every component, and the demo sends a Bulk request
and a PGP-encrypted file. The test waits until the demo's own receiver has counted every event the demo
announced (both sources, through the workers and the sink), then stops ``inflow up`` by its pid.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from inflow.demo import BULK_ACTIONS, EVENT_NAME, IMPORT_ROWS, Demo, Receiver
from inflow.local.process import free_port
from inflow.producers.s3_import.definition import PgpConfig
from inflow.producers.s3_import.exceptions import PgpError
from inflow.producers.s3_import.pgp import DecryptStream, Keyring
from tests.support import wait_for


@pytest.fixture
def up_demo(service_env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    env = service_env | {
        "INFLOW_GATEWAY_PORT": str(free_port()),
        "INFLOW_SINK_METRICS_PORT": str(free_port()),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "inflow.cli", "up", "--demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        reader.join(10)


def _count(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


def _processes_naming(text: str) -> list[int]:
    """Pids of processes whose command line holds ``text`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _log(lines: list[str]) -> str:
    return "".join(lines[-80:])


def test_up_demo_delivers_the_bulk_request_and_the_encrypted_file_to_its_receiver(
    up_demo: tuple[subprocess.Popen[str], list[str]],
) -> None:
    proc, lines = up_demo

    def announced() -> re.Match[str] | None:
        assert proc.poll() is None, f"inflow up exited with {proc.returncode}:\n{_log(lines)}"
        text = "".join(lines)
        assert "demo    | FAILED" not in text, _log(lines)
        return re.search(r"sent (\d+) events .* as they arrive: (http://127\.0\.0\.1:\d+/count)", text)

    found = wait_for(announced, timeout=240, interval=0.5, what="the demo's announcement")
    expected, count_url = int(found.group(1)), found.group(2)
    assert expected == 2 * len(BULK_ACTIONS) + IMPORT_ROWS
    text = "".join(lines)
    assert "console: http://127.0.0.1:8090" in text
    assert re.search(r"workspace DEMO01 ready, data API key \S+", text)

    def delivered() -> dict[str, Any] | None:
        assert proc.poll() is None, f"inflow up exited with {proc.returncode}:\n{_log(lines)}"
        try:
            counts = _count(count_url)
        except OSError as exc:
            raise AssertionError(
                f"{count_url}: {exc}; inflow up ({proc.poll()}) said:\n{_log(lines)}"
            ) from exc
        return counts if counts["events"] >= expected else None

    counts = wait_for(delivered, timeout=240, interval=1.0, what=f"{expected} events at {count_url}")
    assert counts["actions"][EVENT_NAME] == IMPORT_ROWS, counts
    for action in BULK_ACTIONS:
        assert counts["actions"][action] == 2, counts
    print(_log(lines))  # what a person sees (shown with -s)
    # Stopping by pid stops every component and the receiver.
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(90) == 0
    with pytest.raises(OSError):
        _count(count_url)


def test_receiver_counts_events_and_refuses_what_is_not_a_streams_request() -> None:
    receiver = Receiver().start()
    try:
        post = urllib.request.Request(  # noqa: S310
            receiver.url,
            data=json.dumps({"app_name": "x", "events": [{"event_name": "A"}, {"event_name": "B"}]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(post, timeout=5) as response:
            assert response.status == 200
        bad = urllib.request.Request(
            receiver.url, data=b"[1, 2]", headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=5)
        assert refused.value.code == 400 and b"not a Streams request" in refused.value.read()
        assert _count(receiver.count_url) == {"requests": 1, "events": 2, "actions": {"A": 1, "B": 1}}
    finally:
        receiver.stop()
    with pytest.raises(OSError):
        _count(receiver.count_url)


@pytest.mark.parametrize("passphrase", ["-6YS3fAambo6Xw1iKMuZIw", "--help", "plain passphrase"])
def test_the_demo_key_pair_takes_any_passphrase_and_decrypts_with_it(tmp_path: Path, passphrase: str) -> None:
    """A random passphrase may start with '-' (token_urlsafe does 1 time in 32): gpg gets it on stdin."""
    demo = Demo(rt=None, receiver=None, gateway_url="", log=print, workdir=tmp_path)  # type: ignore[arg-type]
    try:
        private, fingerprint = demo._gpg_key_pair(passphrase)
        plain = tmp_path / "plain.csv"
        plain.write_bytes(b"customer,amount\nu1,1.5\n")
        encrypted = tmp_path / "plain.csv.pgp"
        demo._gpg("--trust-model", "always", "-o", str(encrypted), "--encrypt", "-r", fingerprint, str(plain))
        data = encrypted.read_bytes()
    finally:
        demo.close()
    assert not tmp_path.exists()
    wait_for(lambda: not _processes_naming(str(tmp_path)), 30, what="the demo's gpg-agent to stop")
    cfg = PgpConfig(decryption_key=SecretStr(private), passphrase=SecretStr(passphrase))
    with Keyring(cfg) as keyring:
        stream = DecryptStream(keyring, io.BytesIO(data))
        out = stream.stdout.read()
        stream.finish()
    assert out == b"customer,amount\nu1,1.5\n"
    wrong = PgpConfig(decryption_key=SecretStr(private), passphrase=SecretStr(passphrase + "x"))
    with Keyring(wrong) as keyring, pytest.raises(PgpError):
        stream = DecryptStream(keyring, io.BytesIO(data))
        stream.stdout.read()
        stream.finish()
