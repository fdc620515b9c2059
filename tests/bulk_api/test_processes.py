"""Gateways as processes: workspace commands, key rotation on a running gateway, SIGTERM, Kafka outage."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
from confluent_kafka.admin import AdminClient

from inflow.config.settings import KafkaSettings, LocalKafkaSettings
from inflow.config.topics import create_topics, load_catalogue
from inflow.local.kafka import LocalKafka
from inflow.local.process import free_port
from inflow.schemas.packs import unpack
from inflow.schemas.serde import AvroSerde
from tests.bulk_api.conftest import KEY, WS, basic, gateway_env, write_config
from tests.support import consume_n, consume_until_quiet, wait_for

CUSTOMER = {"type": "customer", "customer_id": "cli-user"}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "inflow.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def status(url: str, ws: str, key: str) -> int:
    headers = {"Authorization": basic(ws, key), "Content-Type": "application/json"}
    return requests.post(f"{url}/v1/customer/{ws}", json=CUSTOMER, headers=headers, timeout=60).status_code


def test_workspace_commands_and_key_rotation_on_a_running_gateway(
    gateway_process, catalogue_topics, tmp_path
):
    env = gateway_env(catalogue_topics, tmp_path / "home", write_config(tmp_path / "inflow.yaml"))
    gw = gateway_process(env)
    created = json.loads(cli(env, "workspaces", "create", "NEWWS", "--identifiers", "moe_mobile").stdout)
    first_key = created["data_api_key"]
    assert created["workspace_id"] == "NEWWS" and len(first_key) >= 32
    wait_for(lambda: status(gw.url, "NEWWS", first_key) == 200, 30, what="new workspace on the gateway")

    rotated = json.loads(cli(env, "workspaces", "rotate-key", "NEWWS", "--key", "second-key").stdout)
    assert rotated["key_version"] == 2
    wait_for(lambda: status(gw.url, "NEWWS", first_key) == 401, 30, what="old key to stop working")
    assert status(gw.url, "NEWWS", "second-key") == 200

    listed = [json.loads(line) for line in cli(env, "workspaces", "list").stdout.splitlines()]
    new = next(w for w in listed if w["workspace_id"] == "NEWWS")
    assert new["key_version"] == 2 and new["identifiers"] == ["moe_mobile"] and "key_hash" not in new
    assert {w["workspace_id"] for w in listed} >= {WS, "NEWWS"}  # the YAML workspace was seeded

    cli(env, "workspaces", "disable", "NEWWS")
    wait_for(lambda: status(gw.url, "NEWWS", "second-key") == 403, 30, what="disabled workspace")
    cli(env, "workspaces", "enable", "NEWWS")
    wait_for(lambda: status(gw.url, "NEWWS", "second-key") == 200, 30, what="enabled workspace")
    assert gw.stop() == 0
    assert "gateway stopped" in gw.log.read_text()


def test_creating_an_existing_workspace_fails_with_a_clear_message(catalogue_topics, tmp_path):
    env = gateway_env(catalogue_topics, tmp_path / "home")
    cli(env, "workspaces", "create", "DUP", "--key", "k-one")
    result = subprocess.run(
        [sys.executable, "-m", "inflow.cli", "workspaces", "create", "DUP"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "workspace DUP already exists" in result.stdout + result.stderr


def test_kafka_stopped_mid_traffic_gives_503_and_never_a_false_200(
    gateway_process, tmp_path, kafka_bootstrap
):
    local = LocalKafka(
        tmp_path / "kafka",
        Path.home() / ".cache" / "inflow",
        LocalKafkaSettings(port=free_port(), controller_port=free_port()),
    )
    local.start()
    try:
        kafka = KafkaSettings(bootstrap_servers=local.bootstrap_servers, topic_prefix="outage")
        create_topics(AdminClient(kafka.client_config()), load_catalogue(kafka.topic_prefix))
        env = gateway_env(
            kafka,
            tmp_path / "home",
            write_config(tmp_path / "inflow.yaml"),
            INFLOW_GATEWAY_DELIVERY_TIMEOUT_MS="4000",
        )
        gw = gateway_process(env)
        results: list[tuple[int, list[str]]] = []
        stop_sending = threading.Event()

        def sender(worker: int) -> None:
            headers = {"Authorization": basic(WS, KEY), "Content-Type": "application/json"}
            n = 0
            while not stop_sending.is_set():
                ids = [f"w{worker}-r{n}-{i}" for i in range(20)]
                body = {
                    "type": "transition",
                    "elements": [{"type": "customer", "customer_id": c} for c in ids],
                }
                try:
                    resp = requests.post(
                        f"{gw.url}/v1/transition/{WS}", json=body, headers=headers, timeout=60
                    )
                    results.append((resp.status_code, ids))
                    if resp.status_code == 503:
                        assert resp.json()["error"]["type"] == "Server Error"
                except requests.RequestException:
                    results.append((-1, ids))
                n += 1

        threads = [threading.Thread(target=sender, args=(w,)) for w in range(3)]
        for t in threads:
            t.start()
        wait_for(
            lambda: sum(1 for s, _ in results if s == 200) >= 5, 60, what="accepted requests before the stop"
        )
        local.stop()
        wait_for(
            lambda: sum(1 for s, _ in results if s == 503) >= 3, 90, what="503 answers while Kafka is down"
        )
        stop_sending.set()
        for t in threads:
            t.join(60)
        assert {s for s, _ in results} <= {200, 503}
        local.start()
        wait_for(lambda: status(gw.url, WS, KEY) == 200, 120, what="gateway to recover after Kafka restarts")

        # Every request answered 200 has all of its records on the topic.
        from confluent_kafka import Consumer

        consumer = Consumer(kafka.consumer_config(f"check-{time.time_ns()}"))
        consumer.subscribe([kafka.topic("ingest.records")])
        serde = AvroSerde()
        # The first record waits for the group join (slow while the restarted broker loads its
        # coordinator state); only then does "quiet" mean nothing more is there.
        read = consume_n(consumer, 1, timeout=120) + consume_until_quiet(consumer, 3.0, 120)
        stored = {serde.decode(item)[1]["customer_id"] for m in read for item in unpack(serde, m.value())}
        consumer.close()
        accepted = [c for s, ids in results if s == 200 for c in ids]
        assert accepted and set(accepted) <= stored
        assert gw.stop() == 0
    finally:
        local.stop()


def test_workspace_commands_name_a_missing_topic(kafka_settings, tmp_path):
    env = gateway_env(kafka_settings, tmp_path / "home")  # no catalogue under this prefix
    result = subprocess.run([sys.executable, "-m", "inflow.cli", "workspaces", "list"], env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2
    output = " ".join((result.stdout + result.stderr).split())
    assert f"topic {kafka_settings.topic('control.workspaces')} does not exist" in output
    assert "inflow topics create" in output
