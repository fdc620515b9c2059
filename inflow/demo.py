"""``inflow up --demo``: a first run that shows the product end to end on this machine.

Beside the running components it starts a local receiver (an aiohttp server on 127.0.0.1 that counts what a
stream delivers to it), then, through the same functions as the CLI commands:

1. creates (or re-keys) the workspace ``DEMO01`` (``inflow workspaces create|rotate-key``);
2. adds the stream ``demo-receiver`` to the receiver (``inflow streams add``);
3. makes a PGP key pair with GnuPG, uploads a PGP-encrypted events CSV to the S3 folder
   ``s3://inflow-demo/demo/purchases`` and adds an import for it with the private key
   (``inflow imports add``), which the poller runs at once;
4. sends a Bulk Import request to the gateway (retried until the gateway knows the new key).

Every event of the request and of the file then reaches the receiver through the workers and the sink; its
``/count`` answers how many arrived. Nothing here is needed for production use.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from inflow.errors import InflowError
from inflow.local.process import free_port
from inflow.runtime import Runtime

WORKSPACE = "DEMO01"
STREAM = "demo-receiver"
IMPORT = "demo-purchases"
BUCKET = "inflow-demo"
FOLDER = "demo/purchases"
EVENT_NAME = "Demo Purchase"
BULK_CUSTOMERS = ("ada@example.com", "grace@example.com")
BULK_ACTIONS = ("Signed Up", "Product Viewed", "Added To Cart")
IMPORT_ROWS = 5
READY_TIMEOUT_S = 180.0
GPG = ["gpg", "--batch", "--no-tty", "--quiet", "--pinentry-mode", "loopback"]
Log = Callable[[str], None]


class DemoError(InflowError):
    """A demo step failed; the message names the step and the reason."""


class Receiver:
    """A stream endpoint on 127.0.0.1 that counts requests and events: ``POST /stream``, ``GET /count``."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.requests = 0
        self.events = 0
        self.actions: dict[str, int] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._serve, name="demo-receiver", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream"

    @property
    def count_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/count"

    def counts(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": self.requests, "events": self.events, "actions": dict(self.actions)}

    async def _receive(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            events = body.get("events") if isinstance(body, dict) else None
            if not isinstance(events, list):
                raise ValueError("no events list")
        except (ValueError, UnicodeDecodeError) as exc:
            return web.json_response({"error": f"not a Streams request: {exc}"}, status=400)
        with self._lock:
            self.requests += 1
            self.events += len(events)
            for event in events:
                name = (
                    str(event.get("event_name") or event.get("action") or "?")
                    if isinstance(event, dict)
                    else "?"
                )
                self.actions[name] = self.actions.get(name, 0) + 1
        return web.json_response({"status": "ok"})

    async def _count(self, _: web.Request) -> web.Response:
        return web.json_response(self.counts())

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/stream", self._receive)
        app.router.add_get("/count", self._count)
        runner = web.AppRunner(app, access_log=None)
        self._runner = runner
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    def start(self) -> Receiver:
        self._thread.start()
        if not self._ready.wait(15):
            raise DemoError(f"the demo receiver did not start on 127.0.0.1:{self.port}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


@dataclass
class Demo:
    """The demo's steps against one runtime; :meth:`run` does them all and returns the expected count."""

    rt: Runtime
    receiver: Receiver
    gateway_url: str
    log: Log
    data_api_key: str = ""
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="inflow-demo-")))

    @property
    def expected_events(self) -> int:
        return len(BULK_CUSTOMERS) * len(BULK_ACTIONS) + IMPORT_ROWS

    def run(self) -> int:
        try:
            self.workspace()
            self.stream()
            self.encrypted_import()
            self.bulk_request()
        finally:
            self.close()
        return self.expected_events

    def workspace(self) -> None:
        from inflow.producers.bulk_api import cli as workspaces
        from inflow.workspaces.exceptions import WorkspaceError
        from inflow.workspaces.keys import generate_key

        self.data_api_key = generate_key()
        try:
            workspaces.create(WORKSPACE, key=self.data_api_key)
        except WorkspaceError:
            workspaces.rotate_key(WORKSPACE, key=self.data_api_key)
        self.log(f"workspace {WORKSPACE} ready, data API key {self.data_api_key}")

    def stream(self) -> None:
        from inflow.sinks.streams import cli as streams

        streams.add(
            STREAM,
            url=self.receiver.url,
            app_name="inflow-demo",
            workspace=WORKSPACE,
            linger=0.5,
            replace=True,
        )
        self.log(f"stream {STREAM} delivers {WORKSPACE}'s events to {self.receiver.url}")

    def encrypted_import(self) -> None:
        from inflow.local.s3 import boto3_client
        from inflow.producers.s3_import import cli as imports

        passphrase = secrets.token_urlsafe(16)
        private, fingerprint = self._gpg_key_pair(passphrase)
        now = datetime.now(UTC).replace(microsecond=0)
        rows = ["customer,time,amount,currency"]
        for i in range(IMPORT_ROWS):
            at = (now - timedelta(minutes=IMPORT_ROWS - i)).strftime("%Y-%m-%dT%H:%M:%SZ")
            rows.append(f"{BULK_CUSTOMERS[i % len(BULK_CUSTOMERS)]},{at},{10 + i}.5,EUR")
        plain = self.workdir / "purchases.csv"
        plain.write_text("\n".join(rows) + "\n")
        encrypted = self.workdir / "purchases.csv.pgp"
        self._gpg(
            "--trust-model", "always", "--output", str(encrypted), "--encrypt", "-r", fingerprint, str(plain)
        )
        s3 = boto3_client(self.rt.s3, str(self.rt.s3.endpoint_url))
        try:
            s3.head_bucket(Bucket=BUCKET)
        except Exception:  # noqa: BLE001 - missing bucket (or any reason HEAD fails): create it
            s3.create_bucket(Bucket=BUCKET)
        file_name = f"{EVENT_NAME.replace(' ', '_')}_{now:%Y%m%d_%H%M}.csv.pgp"
        s3.put_object(Bucket=BUCKET, Key=f"{FOLDER}/{file_name}", Body=encrypted.read_bytes())
        definition = {
            "name": IMPORT,
            "workspace_id": WORKSPACE,
            "type": "events",
            "event_name": EVENT_NAME,
            "bucket": BUCKET,
            "folder": FOLDER,
            "access_key": self.rt.s3.access_key_id,
            "secret_key": self.rt.s3.secret_access_key.get_secret_value(),
            "endpoint_url": self.rt.s3.endpoint_url,
            "date_format": "yyyymmdd_hhmm",
            "encrypted": True,
            "pgp": {"decryption_key": private, "passphrase": passphrase},
            "mappings": [
                {"column": "customer", "moe_attr": "uid"},
                {
                    "column": "time",
                    "moe_attr": "event_time",
                    "type": "datetime",
                    "datetime_format": "YYYY-MM-DDThh:mm:ssTZD",
                },
                {"column": "amount", "moe_attr": "amount", "type": "double"},
                {"column": "currency", "moe_attr": "currency"},
            ],
        }
        path = self.workdir / "import.yaml"
        path.write_text(yaml.safe_dump(definition))
        path.chmod(0o600)
        imports.add(path, manifest=None, replace=True)
        self.log(
            f"uploaded s3://{BUCKET}/{FOLDER}/{file_name} (PGP-encrypted, {IMPORT_ROWS} rows); "
            f"import {IMPORT}"
        )

    def close(self) -> None:
        """Stop the gpg-agent the key generation started in the demo's home, then remove the home."""
        home = self.workdir / "gnupg"
        if home.exists():
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(
                    ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                    capture_output=True,
                    timeout=10,
                    check=False,
                )
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _gpg(self, *args: str, passphrase: str | None = None) -> bytes:
        """Run gpg in the demo's own home; a passphrase goes in on stdin (never in argv, where a
        leading '-' would read as an option and where every process listing would show it)."""
        home = self.workdir / "gnupg"
        home.mkdir(mode=0o700, exist_ok=True)
        fd = ["--passphrase-fd", "0"] if passphrase is not None else []
        stdin = (passphrase + "\n").encode() if passphrase is not None else None
        try:
            return subprocess.run(
                [*GPG, "--homedir", str(home), *fd, *args],
                input=stdin,
                capture_output=True,
                check=True,
                timeout=120,
            ).stdout
        except FileNotFoundError as exc:
            raise DemoError("GnuPG (`gpg`) is needed for the demo's encrypted file; install gnupg") from exc
        except subprocess.CalledProcessError as exc:
            raise DemoError(f"gpg {args[0]} failed: {exc.stderr.decode(errors='replace').strip()}") from exc

    def _gpg_key_pair(self, passphrase: str) -> tuple[str, str]:
        uid = "Inflow demo <demo@inflow.invalid>"
        self._gpg("--quick-gen-key", uid, "future-default", "default", "never", passphrase=passphrase)
        colons = self._gpg("--with-colons", "--list-keys", uid).decode()
        fingerprint = next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr"))
        private = self._gpg("--armor", "--export-secret-keys", fingerprint, passphrase=passphrase).decode()
        return private, fingerprint

    def bulk_request(self) -> None:
        now = int(time.time())
        elements: list[dict[str, Any]] = []
        for customer in BULK_CUSTOMERS:
            name = customer.split("@")[0].title()
            elements.append(
                {
                    "type": "customer",
                    "customer_id": customer,
                    "attributes": {"first_name": name, "email": customer},
                }
            )
            actions = [
                {
                    "action": action,
                    "attributes": {"demo": True},
                    "platform": "web",
                    "current_time": now - 60 + i,
                }
                for i, action in enumerate(BULK_ACTIONS)
            ]
            elements.append({"type": "event", "customer_id": customer, "actions": actions})
        body = json.dumps({"type": "transition", "elements": elements}).encode()
        auth = base64.b64encode(f"{WORKSPACE}:{self.data_api_key}".encode()).decode()
        url = f"{self.gateway_url}/v1/transition/{WORKSPACE}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = "no answer"
        while time.monotonic() < deadline:
            request = urllib.request.Request(  # noqa: S310 - the local gateway's http URL
                url, data=body, headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                    answer = json.loads(response.read())
                self.log(f"Bulk request accepted by {url}: {answer.get('message', answer)}")
                return
            except urllib.error.HTTPError as exc:
                # 401 until the gateway has read the new key, 503 until Kafka answers: both pass.
                last = f"HTTP {exc.code} {exc.read()[:200].decode(errors='replace')}"
                if exc.code not in (401, 429, 503):
                    break
            except OSError as exc:
                last = str(exc)  # the gateway is still starting
            time.sleep(1)
        raise DemoError(f"the gateway at {url} did not accept the demo's Bulk request: {last}")


def console_url() -> str:
    """Where the console answers (its settings when the console is installed, else its default port)."""
    try:
        from inflow.console.settings import ConsoleSettings  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return "http://127.0.0.1:8090"
    settings = ConsoleSettings()
    return f"http://127.0.0.1:{settings.port}"


def start_demo(rt: Runtime, receiver: Receiver, gateway_url: str, log: Log) -> threading.Thread:
    """Run the demo in a thread beside ``inflow up``'s supervisor; failures are logged, never raised."""

    def run() -> None:
        try:
            expected = Demo(rt, receiver, gateway_url, log).run()
        except Exception as exc:  # noqa: BLE001 - the demo must never take the running pipeline down
            log(f"FAILED: {exc}")
            return
        log(
            f"sent {expected} events ({len(BULK_CUSTOMERS) * len(BULK_ACTIONS)} by the Bulk API, "
            f"{IMPORT_ROWS} in the encrypted file); the receiver counts them as they arrive: "
            f"{receiver.count_url}"
        )
        log(f"console: {console_url()}   gateway: {gateway_url}/openapi.json")

    thread = threading.Thread(target=run, name="demo", daemon=True)
    thread.start()
    return thread
