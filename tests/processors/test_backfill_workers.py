"""Identifier backfill with real ``inflow worker`` processes (§2.8 "Existing users merge ... after
activation"): users stored while email was not an identifier merge once it is switched on in
``control.workspaces``; the result is read through Get User on a real gateway, the profiles topic, the
merge events and ``inflow identity backfill status``; a backfill interrupted by a worker restart resumes
its scan where it stopped."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests

from inflow.config.settings import KafkaSettings
from inflow.kafka.clients import new_consumer
from inflow.local.process import free_port
from inflow.processors.routing import partition_of
from inflow.producers.bulk_api.settings import GatewaySettings
from inflow.schemas.serde import AvroSerde
from inflow.workspaces.registry import WorkspaceRegistry, new_workspace
from tests.bulk_api.conftest import basic, start_in_process
from tests.conftest import TEST_PARTITIONS
from tests.processors import records as r
from tests.processors.workers import WorkerProcess, output_reader, produce, worker_env
from tests.support import wait_for

WS, KEY = "BF", "bf-data-api-key"
FLAGS = ("moe_hard_bounce", "moe_spam", "moe_unsubscribe")


def switch_identifiers(kafka: KafkaSettings, *identifiers: str) -> None:
    """As ``inflow workspaces`` / the admin API change a workspace: a new record on control.workspaces."""
    registry = WorkspaceRegistry(kafka, AvroSerde()).load()
    current = registry.get(WS) or new_workspace(WS, KEY)
    registry.publish(replace(current, identifiers=tuple(identifiers)))
    registry.stop()


@pytest.fixture
def gateway_url(worker_topics: KafkaSettings, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    settings = GatewaySettings(port=port, profile_store_dir=tmp_path / "profiles")
    gateway, shutdown = start_in_process(worker_topics, settings, [])
    try:
        wait_for(lambda: all(gateway.views().values()), 60, what="gateway views")
        yield f"http://127.0.0.1:{port}"
    finally:
        shutdown()


def get_users(url: str, kind: str, *values: str) -> dict[str, Any]:
    body = {"data": {"identifiers": [{"identifier_type": kind, "identifier": v} for v in values]}}
    resp = requests.post(
        f"{url}/v1/customers/export?app_id={WS}",
        json=body,
        headers={"Authorization": basic(WS, KEY)},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["data"])


def backfill_status(kafka: KafkaSettings, home: Path) -> tuple[int, list[dict[str, Any]]]:
    env = worker_env(kafka, home, [])
    done = subprocess.run(
        [sys.executable, "-m", "inflow.cli", "identity", "backfill", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_users_sharing_an_email_merge_when_email_is_switched_on(
    worker_topics: KafkaSettings, producer_factory: Callable[..., Any], gateway_url: str, tmp_path: Path
) -> None:
    kafka = worker_topics
    switch_identifiers(kafka)  # customer_id only
    worker = WorkerProcess(
        "bf", worker_env(kafka, tmp_path / "home", []), tmp_path / "data", tmp_path / "w.log"
    )
    worker.start()
    out = output_reader(kafka)
    producer = producer_factory()
    try:
        produce(
            producer,
            kafka,
            [
                (
                    "UserUpsert",
                    r.user(
                        WS,
                        "old",
                        at=1,
                        attributes={"email": "same@x.io", "city": "Oslo"} | dict.fromkeys(FLAGS, True),
                    ),
                ),
                (
                    "UserUpsert",
                    r.user(
                        WS,
                        "new",
                        at=2,
                        attributes={"email": "same@x.io", "name": "New"} | dict.fromkeys(FLAGS, False),
                    ),
                ),
                ("UserUpsert", r.user(WS, "solo", at=3, attributes={"email": "solo@x.io"})),
            ],
        )
        wait_for(out.until(lambda o: len(o.latest_profiles()) == 3, [worker]), 120, what="three users")
        uid = {p["customer_id"]: p["uid"] for p in out.latest_profiles().values()}
        assert get_users(gateway_url, "email", "same@x.io")["users"] == []  # not an identifier yet

        switch_identifiers(kafka, "email")

        def merged(o: Any) -> bool:
            return o.latest_profiles()[uid["old"]]["merged_into"] == uid["new"]

        wait_for(out.until(merged, [worker]), 120, what="old merged into new")
        retained = out.latest_profiles()[uid["new"]]
        attributes = json.loads(retained["attributes_json"])
        assert retained["merged_uids"] == [uid["old"]]
        assert (attributes["u_n"], attributes["city"]) == ("New", "Oslo")  # retained wins, missing copied
        assert all(attributes[flag] is True for flag in FLAGS)  # true on conflict
        wait_for(out.until(lambda o: len(o.events) >= 2, [worker]), 60, what="the merge events")
        codes = {e["event_code"]: e["uid"] for e in out.events}
        assert codes == {"MOE_USER_MERGED": uid["new"], "MOE_USER_MERGE_EVENT": uid["old"]}

        # Get User: by the e-mail (now an identifier), and the merged user's id forwards to the retained one.
        def resolved() -> bool:
            by_mail = get_users(gateway_url, "email", "same@x.io", "solo@x.io")["users"]
            return {u["user_attributes"]["moengage_id"] for u in by_mail} == {uid["new"], uid["solo"]}

        wait_for(resolved, 60, what="Get User by e-mail")
        (forwarded,) = get_users(gateway_url, "moengage_id", uid["old"])["users"]
        assert forwarded["user_attributes"]["moengage_id"] == uid["new"]
        solo = out.latest_profiles()[uid["solo"]]
        assert solo["merged_uids"] == [] and solo["identifiers"] == {"email": "solo@x.io"}

        def finished() -> bool:
            code, statuses = backfill_status(kafka, tmp_path / "cli")
            return code == 0 and [(s["workspace_id"], s["identifier"], s["state"]) for s in statuses] == [
                (WS, "email", "done")
            ]

        wait_for(finished, 60, what="backfill status done")
        _, (status,) = backfill_status(kafka, tmp_path / "cli")
        assert status["partitions_done"] == TEST_PARTITIONS
        assert (status["profiles_scanned"], status["profiles_claimed"]) == (3, 3)
        assert out.rejected == []
    except AssertionError:
        print(worker.tail())
        raise
    finally:
        out.consumer.close()
        code = worker.terminate()
    assert code == 0


def on_partition(partition: int, n: int) -> list[str]:
    """``n`` customer ids whose users live on ``partition`` of ingest.records."""
    found, i = [], 0
    while len(found) < n:
        cid = f"p{i}"
        if partition_of(f"{WS}:{cid}", TEST_PARTITIONS) == partition:
            found.append(cid)
        i += 1
    return found


def test_a_backfill_interrupted_by_a_worker_restart_resumes_its_scan(
    worker_topics: KafkaSettings, producer_factory: Callable[..., Any], tmp_path: Path
) -> None:
    kafka = worker_topics
    switch_identifiers(kafka)
    # Two profiles per step, one step every 0.3 s on each partition: 40 profiles take seconds to scan.
    env = worker_env(kafka, tmp_path / "home", []) | {
        "INFLOW_WORKER_BACKFILL_BATCH": "2",
        "INFLOW_WORKER_BACKFILL_STEP_INTERVAL_S": "0.3",
    }
    cids = on_partition(0, 40)
    worker = WorkerProcess("bf", env, tmp_path / "data", tmp_path / "w.log").start()
    out = output_reader(kafka)
    progress = new_consumer(kafka, f"progress-{tmp_path.name}")
    progress.subscribe([kafka.topic("control.backfill")])
    seen: list[dict[str, Any]] = []

    def read_progress() -> list[dict[str, Any]]:
        for msg in progress.consume(500, 0.3):
            if not msg.error() and msg.value() is not None:
                record = json.loads(msg.value())
                if record["partition"] == 0 and record["identifier"] == "email":
                    seen.append(record)
        return seen

    try:
        produce(
            producer_factory(),
            kafka,
            [
                ("UserUpsert", r.user(WS, cid, at=i, attributes={"email": f"{cid}@x.io"}))
                for i, cid in enumerate(cids)
            ],
        )
        wait_for(out.until(lambda o: len(o.latest_profiles()) == 40, [worker]), 120, what="40 users")
        switch_identifiers(kafka, "email")
        wait_for(
            lambda: any(6 <= s["scanned"] and not s["done"] for s in read_progress()), 60, what="mid-scan"
        )
        assert worker.terminate() == 0  # stopped between two steps: the last step's progress is committed
        before = len(read_progress())
        worker = WorkerProcess("bf", env, tmp_path / "data", tmp_path / "w.log").start()
        wait_for(lambda: any(s["done"] for s in read_progress()), 120, what="the scan of partition 0 to end")
        last_before = seen[before - 1]
        after = seen[before:]
        assert all(s["started_at"] == last_before["started_at"] for s in after)  # the same job, resumed
        assert after[0]["scanned"] >= last_before["scanned"]  # not from the first profile again
        assert [s["scanned"] for s in seen] == sorted(s["scanned"] for s in seen)
        assert (seen[-1]["scanned"], seen[-1]["claimed"]) == (40, 40)

        def indexed(o: Any) -> bool:
            return sum(1 for p in o.latest_profiles().values() if p["identifiers"].get("email")) == 40

        wait_for(out.until(indexed, [worker]), 60, what="every profile indexed by its e-mail")
    except AssertionError:
        print(worker.tail())
        raise
    finally:
        progress.close()
        out.consumer.close()
        code = worker.terminate()
    assert code == 0
