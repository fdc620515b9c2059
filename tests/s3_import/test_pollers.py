"""Several real poller processes: a file is imported by exactly one of them, and a poller killed mid-file
is resumed from its checkpoint without double counting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from inflow.config.secrets import SecretBox
from inflow.config.settings import KafkaSettings
from inflow.producers.s3_import.ledger import ledger_key, partition_for
from inflow.producers.s3_import.runs import RunStore
from inflow.producers.s3_import.store import DefinitionStore
from inflow.schemas.serde import AvroSerde
from tests.s3_import.conftest import repo_root
from tests.support import consume_n, consume_until_quiet, wait_for


class PollerProcess:
    """``python -m inflow.cli poller`` with its log in a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._handle = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "inflow.cli", "poller"],
            env=env,
            cwd=repo_root(),
            stdout=self._handle,
            stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        code = self.proc.wait(timeout=60)
        self._handle.close()
        return code


@pytest.fixture
def secret_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def pollers(
    service_env: dict[str, str], secret_key: str, tmp_path: Path, unique: str
) -> Iterator[Callable[[], PollerProcess]]:
    started: list[PollerProcess] = []
    env = service_env | {
        "INFLOW_SECRET_KEY": secret_key,
        "INFLOW_POLLER_TICK_SECONDS": "1",
        "INFLOW_POLLER_GROUP_ID": f"pollers-{unique}",
        "INFLOW_POLLER_CHECKPOINT_ROWS": "20000",
    }

    def start() -> PollerProcess:
        process = PollerProcess(env, tmp_path / f"poller-{len(started)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop(signal.SIGKILL)


def final_runs(kafka: KafkaSettings, name: str) -> list[dict[str, Any]]:
    """Runs that ended (not QUEUED, PROCESSING, WAITING or RETRYING)."""
    ended = ("SUCCESSFUL", "PARTIAL_SUCCESS", "FAILED")
    return [r for r in RunStore(kafka, AvroSerde()).history(name, timeout=10) if r["status"] in ended]


def test_two_pollers_never_import_the_same_file(
    pollers: Callable[[], PollerProcess],
    definition: Callable[..., Any],
    put: Callable[..., None],
    catalogue_topics: KafkaSettings,
    consumer_factory: Callable[..., Any],
    secret_key: str,
    bucket: str,
) -> None:
    first, second = pollers(), pollers()
    wait_for(
        lambda: "partitions assigned" in first.text() and "partitions assigned" in second.text(),
        90,
        what="both pollers in the ledger group",
    )
    d = definition(date_format="yyyymmdd_hhmm")
    names, covered = [], set()
    for minute in range(60):  # pick file names that land on every ledger partition
        name = f"registered_user_data_20240101_00{minute:02d}.csv"
        p = partition_for(ledger_key(d.name, bucket, d.folder, name), 6)
        if p not in covered or len(names) < 12:
            names.append(name)
            covered.add(p)
        if len(covered) == 6 and len(names) >= 12:
            break
    for i, name in enumerate(names):
        put(f"in/users/{name}", "ID,First Name\n" + "".join(f"f{i}r{r},x\n" for r in range(50)))
    DefinitionStore(catalogue_topics, AvroSerde(), SecretBox(secret_key.encode())).put(d)

    runs = wait_for(
        lambda: (
            len(final_runs(catalogue_topics, d.name)) >= len(names) and final_runs(catalogue_topics, d.name)
        ),
        120,
        interval=1,
        what="every file imported",
    )
    assert sorted(r["file_name"] for r in runs) == sorted(names)  # exactly one run per file
    assert all(r["status"] == "SUCCESSFUL" and r["rows_added"] == 50 for r in runs)
    consumer = consumer_factory([catalogue_topics.topic("ingest.records")])
    msgs = consume_n(consumer, 50 * len(names), timeout=60) + consume_until_quiet(consumer, quiet=3)
    keys = [m.key() for m in msgs]
    assert len(keys) == len(set(keys)) == 50 * len(names)  # no row produced twice
    ledger = consume_until_quiet(consumer_factory([catalogue_topics.topic("control.import-ledger")]), quiet=2)
    owners = {AvroSerde().decode(m.value())[1]["owner"] for m in ledger}
    assert len(owners) == 2  # both pollers took part, each on its own partitions
    assert first.stop() == 0 and second.stop() == 0  # SIGTERM: graceful exit


def test_poller_killed_mid_file_resumes_without_double_counting(
    pollers: Callable[[], PollerProcess],
    definition: Callable[..., Any],
    put: Callable[..., None],
    catalogue_topics: KafkaSettings,
    consumer_factory: Callable[..., Any],
    secret_key: str,
) -> None:
    n = 200_000
    put(
        "in/users/registered_user_data_20240101.csv",
        "ID,First Name\n" + "".join(f"u{i},x\n" for i in range(n)),
    )
    d = definition()
    DefinitionStore(catalogue_topics, AvroSerde(), SecretBox(secret_key.encode())).put(d)
    ledger_consumer = consumer_factory([catalogue_topics.topic("control.import-ledger")])
    serde = AvroSerde()
    checkpoints: list[int] = []

    def checkpointed() -> bool:
        for msg in ledger_consumer.consume(100, timeout=0.2):
            entry = serde.decode(msg.value())[1]
            if entry["state"] == "CLAIMED" and entry["rows_acked"] > 0:
                checkpoints.append(entry["rows_acked"])
        return bool(checkpoints)

    victim = pollers()
    wait_for(checkpointed, 120, interval=0, what="a checkpoint of the first poller")
    victim.stop(signal.SIGKILL)
    assert not final_runs(catalogue_topics, d.name), "the file finished before the kill; make it larger"

    survivor = pollers()
    (run,) = wait_for(lambda: final_runs(catalogue_topics, d.name), 180, interval=1, what="the resumed run")
    assert (run["status"], run["rows_total"], run["rows_added"], run["rows_failed"]) == (
        "SUCCESSFUL",
        n,
        n,
        0,
    )
    assert "resuming after row" in survivor.text()
    consumer = consumer_factory([catalogue_topics.topic("ingest.records")])
    msgs = consume_n(consumer, n, timeout=120) + consume_until_quiet(consumer, quiet=3)
    keys = {m.key() for m in msgs}
    assert len(keys) == n  # every row arrived
    assert len(msgs) - n <= n - checkpoints[0]  # rows up to the checkpoint were not produced again
