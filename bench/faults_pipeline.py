"""The whole pipeline as real processes for the fault bench and tests/faults.

A private broker and S3 server (or given ones), the catalogue under a fresh topic prefix, a YAML file with one
workspace and one stream, and the four components (``inflow gateway``, ``poller``, ``worker``, ``sink``) as
subprocesses that can be SIGKILLed and restarted by their process id.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml
from cryptography.fernet import Fernet
from pydantic import SecretStr

from inflow.config.settings import KafkaSettings, LocalKafkaSettings, LocalS3Settings, S3Settings
from inflow.config.topics import create_topics, load_catalogue
from inflow.kafka.clients import new_admin
from inflow.local.kafka import LocalKafka
from inflow.local.process import free_port
from inflow.local.s3 import LocalS3, boto3_client

WS = "FAULTS"
KEY = "faults-data-api-key"
STREAM_ID = "faults"
S3_KEY, S3_SECRET = "inflow-faults", "inflow-faults-secret-key"


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """The first truthy value of ``predicate``; raises TimeoutError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Services:
    """A broker and an S3 server: started here (and then restartable) or given by address."""

    bootstrap: str
    s3: S3Settings
    kafka: LocalKafka | None = None
    local_s3: LocalS3 | None = None

    @classmethod
    def start(cls, home: Path) -> Services:
        cache = Path(os.environ.get("INFLOW_CACHE_DIR", Path.home() / ".cache" / "inflow"))
        kafka = LocalKafka(home, cache, LocalKafkaSettings(port=free_port(), controller_port=free_port()))
        kafka.start()
        base = S3Settings(access_key_id=S3_KEY, secret_access_key=SecretStr(S3_SECRET))
        local_s3 = LocalS3(home, base, LocalS3Settings(port=free_port()))
        endpoint = local_s3.start()
        return cls(
            kafka.bootstrap_servers, base.model_copy(update={"endpoint_url": endpoint}), kafka, local_s3
        )

    def stop(self) -> None:
        if self.kafka is not None:
            self.kafka.stop()
        if self.local_s3 is not None:
            self.local_s3.stop()


@dataclass
class Component:
    """One ``inflow <command>`` process; started in its own session, ended by its pid only."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    _terminated: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"\n=== start {self.starts + 1} at {time.strftime('%H:%M:%S')} ===\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "inflow.cli", *self.argv],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL by pid (no clean-up runs) and reap it."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.exit_codes.append(self.proc.wait(60))

    def terminate(self) -> None:
        """SIGTERM by pid (a clean stop); ``stop`` then waits for the exit."""
        if self.proc is not None and self.proc.poll() is None and self._terminated is not self.proc:
            self._terminated = self.proc  # once: a second SIGTERM means "stop now" to some components
            os.kill(self.proc.pid, signal.SIGTERM)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM by pid; SIGKILL after ``timeout``. Returns the exit code (None if it never ran)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        code = self.proc.returncode
        self.exit_codes.append(code)
        return code

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class PipelineOptions:
    retry_delays_s: tuple[float, ...] = (30.0, 60.0, 120.0)
    batch_size: int = 100
    linger_s: float = 0.5
    poller_checkpoint_rows: int = 5_000


class Pipeline:
    """Topics, config and the four components of one scenario, under a topic prefix of its own."""

    def __init__(
        self, services: Services, prefix: str, workdir: Path, endpoint_url: str, options: PipelineOptions
    ) -> None:
        self.services = services
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.kafka = KafkaSettings(bootstrap_servers=services.bootstrap, topic_prefix=prefix)
        self.options = options
        self.bucket = f"faults-{prefix.lower()}"
        self.gateway_port = free_port()
        self.gateway_url = f"http://127.0.0.1:{self.gateway_port}"
        config = workdir / "inflow.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "workspaces": [
                        {
                            "id": WS,
                            "api_key": KEY,
                            "rate_limits": {"users_per_minute": 10_000_000, "events_per_minute": 10_000_000},
                        }
                    ],
                    "imports": [],
                    "streams": [
                        {
                            "id": STREAM_ID,
                            "url": endpoint_url,
                            "workspace_id": WS,
                            "app_name": "Faults",
                            "batch_size": options.batch_size,
                            "linger_s": options.linger_s,
                            "retry_delays_s": list(options.retry_delays_s),
                        }
                    ],
                }
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "S3_", "INFLOW_"))}
        s3 = services.s3
        self.env = env | {
            "KAFKA_BOOTSTRAP_SERVERS": services.bootstrap,
            "KAFKA_TOPIC_PREFIX": prefix,
            "S3_ENDPOINT_URL": str(s3.endpoint_url),
            "S3_ACCESS_KEY_ID": s3.access_key_id,
            "S3_SECRET_ACCESS_KEY": s3.secret_access_key.get_secret_value(),
            "S3_REGION": s3.region,
            "INFLOW_HOME": str(workdir / "home"),
            "INFLOW_CONFIG": str(config),
            "INFLOW_SECRET_KEY": Fernet.generate_key().decode(),
            "INFLOW_POLLER_TICK_SECONDS": "1",
            "INFLOW_POLLER_CHECKPOINT_ROWS": str(options.poller_checkpoint_rows),
            "PYTHONUNBUFFERED": "1",
        }
        argvs = {
            "gateway": ["gateway", "--port", str(self.gateway_port)],
            "poller": ["poller"],
            "worker": ["worker", "--name", "w1"],
            "sink": ["sink"],
        }
        self.components = {
            name: Component(name, argv, self.env, workdir / f"{name}.log") for name, argv in argvs.items()
        }

    # --- life cycle ---------------------------------------------------------------------------------------
    def create(self) -> None:
        create_topics(new_admin(self.kafka), load_catalogue(self.kafka.topic_prefix))
        self.s3_client().create_bucket(Bucket=self.bucket)

    def s3_client(self) -> Any:
        return boto3_client(self.services.s3, str(self.services.s3.endpoint_url))

    def start(self) -> None:
        for component in self.components.values():
            component.start()
        wait_until(self.gateway_healthy, 180, "the gateway to answer /health with 200")

    def gateway_healthy(self) -> bool:
        gw = self.components["gateway"]
        if not gw.alive:
            raise RuntimeError(f"gateway exited:\n{gw.log_text()[-3000:]}")
        try:
            return requests.get(self.gateway_url + "/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every component at once (a clean stop exits 0); returns the exit codes."""
        for component in self.components.values():
            component.terminate()
        return {name: c.stop() for name, c in self.components.items()}

    def drop_topics(self) -> None:
        admin = new_admin(self.kafka)
        names = [
            t for t in admin.list_topics(timeout=10).topics if t.startswith(self.kafka.topic_prefix + ".")
        ]
        if names:
            for future in admin.delete_topics(names, operation_timeout=0, request_timeout=30).values():
                future.exception()

    # --- the import ---------------------------------------------------------------------------------------
    def add_import(self, definition: dict[str, Any]) -> None:
        """``inflow imports add`` with a definition file, as an operator does."""
        path = self.workdir / f"import-{definition['name']}.yaml"
        path.write_text(yaml.safe_dump(definition))
        result = subprocess.run(
            [sys.executable, "-m", "inflow.cli", "imports", "add", str(path)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"imports add failed: {result.stdout}{result.stderr}")
