"""The whole pipeline as real processes for the fault bench and tests/faults.

A private broker and S3 server (or given ones), the catalogue under a fresh topic prefix, a YAML file with one
workspace and one stream, and the four components (``inflow gateway``, ``poller``, ``worker``, ``sink``) as
subprocesses that can be SIGKILLed and restarted by their process id. The process handling shared with the
end-to-end bench is in ``bench/pipeline.py``.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from bench.pipeline import (
    Component,
    StreamSpec,
    gateway_healthy,
    inflow_env,
    start_local_kafka,
    stop_all,
    wait_until,
    write_config,
)
from inflow.config.settings import KafkaSettings, LocalS3Settings, S3Settings
from inflow.config.topics import create_topics, load_catalogue
from inflow.kafka.clients import new_admin
from inflow.local.kafka import LocalKafka
from inflow.local.process import free_port
from inflow.local.s3 import LocalS3, boto3_client

__all__ = ["KEY", "STREAM_ID", "WS", "Component", "Pipeline", "PipelineOptions", "Services", "wait_until"]

WS = "FAULTS"
KEY = "faults-data-api-key"
STREAM_ID = "faults"
S3_KEY, S3_SECRET = "inflow-faults", "inflow-faults-secret-key"


@dataclass
class Services:
    """A broker and an S3 server: started here (and then restartable) or given by address."""

    bootstrap: str
    s3: S3Settings
    kafka: LocalKafka | None = None
    local_s3: LocalS3 | None = None

    @classmethod
    def start(cls, home: Path) -> Services:
        kafka = start_local_kafka(home)
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
        stream = StreamSpec(
            STREAM_ID,
            endpoint_url,
            app_name="Faults",
            batch_size=options.batch_size,
            linger_s=options.linger_s,
            retry_delays_s=options.retry_delays_s,
        )
        config = write_config(workdir / "inflow.yaml", WS, KEY, [stream])
        s3 = services.s3
        self.env = inflow_env(
            services.bootstrap,
            prefix,
            workdir / "home",
            config,
            S3_ENDPOINT_URL=str(s3.endpoint_url),
            S3_ACCESS_KEY_ID=s3.access_key_id,
            S3_SECRET_ACCESS_KEY=s3.secret_access_key.get_secret_value(),
            S3_REGION=s3.region,
            INFLOW_POLLER_TICK_SECONDS="1",
            INFLOW_POLLER_CHECKPOINT_ROWS=str(options.poller_checkpoint_rows),
        )
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
        return gateway_healthy(self.components["gateway"], self.gateway_url)

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every component at once (a clean stop exits 0); returns the exit codes."""
        return stop_all(list(self.components.values()))

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
