"""Run history against a real ``inflow worker``: the processors' own outcomes reach the run's counts.

Three users exist (imported by a first file and applied by the worker); then a file of 10 rows names them
and 7 new ones. What the processors say today (``processors.rejected``: a row skipped because
``do_not_create_new_users`` found no user) is counted, and so is the created / updated split the workers
publish as ``RecordOutcome`` on ``processors.outcomes`` (``producers/s3_import/outcomes.py``):
the second test is the issue's acceptance test for it (7 added, 3 updated).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from inflow.config.settings import KafkaSettings
from inflow.producers.s3_import.poller import Poller
from inflow.producers.s3_import.runs import RunRecord
from tests.processors.workers import WorkerProcess, output_reader, worker_env
from tests.support import wait_for

EXISTING = ["e1", "e2", "e3"]
NEW = [f"n{i}" for i in range(1, 8)]
SEED_FILE = "registered_user_data_01012024.csv"
FILE = "registered_user_data_02012024.csv"


def csv(ids: list[str]) -> str:
    return "ID,First Name\n" + "".join(f"{i},Name {i}\n" for i in ids)


@pytest.fixture
def setup(
    catalogue_topics: KafkaSettings,
    topic_factory: Callable[..., str],
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
    tmp_path: Path,
) -> Iterator[tuple[Poller, Any]]:
    """A worker, a poller tracking outcomes, and the three existing users applied by the worker."""
    kafka = catalogue_topics
    env = worker_env(kafka, tmp_path / "home", [{"id": "WS1", "identifiers": ["customer_id"]}])
    worker = WorkerProcess("w", env, tmp_path / "data", tmp_path / "w.log").start()
    out = output_reader(kafka)
    try:
        poller = poller_factory(track_outcomes=True, apply_timeout_seconds=10)
        seed = definition(name=f"seed-{tmp_path.name[-8:]}", folder="in/seed", date_format="ddmmyyyy")
        put(f"in/seed/{SEED_FILE}", csv(EXISTING))
        poller.store.put(seed)
        poller.run_import(seed)
        wait_for(
            out.until(lambda o: set(EXISTING) <= {p["customer_id"] for p in o.profiles}, [worker]),
            120,
            what="the existing users",
        )
        yield poller, out
    finally:
        out.consumer.close()
        worker.terminate()


def finished(poller: Poller) -> RunRecord:
    ended: list[RunRecord] = []
    wait_for(
        lambda: ended.extend(r for r in poller.collect_outcomes() if r.file_name == FILE) or ended,
        120,
        what="the run to end",
    )
    return ended[0]


def test_rows_the_processors_skip_are_counted_as_skipped(
    setup: tuple[Poller, Any], definition: Callable[..., Any], put: Callable[..., None]
) -> None:
    poller, _ = setup
    d = definition(date_format="ddmmyyyy", do_not_create_new_users=True)
    put(f"in/users/{FILE}", csv(EXISTING + NEW))
    poller.store.put(d)
    (run,) = poller.run_import(d).files
    assert (run.status, run.rows_written) == ("PROCESSING", 10)
    done = finished(poller)
    assert (done.rows_total, done.rows_skipped, done.rows_failed) == (10, 7, 0)  # said by the real processors
    assert done.rows_added + done.rows_updated == 3
    assert done.status == "SUCCESSFUL"


def test_users_file_of_7_new_and_3_existing_users_reports_7_added_and_3_updated(
    setup: tuple[Poller, Any], definition: Callable[..., Any], put: Callable[..., None]
) -> None:
    poller, _ = setup
    d = definition(date_format="ddmmyyyy")
    put(f"in/users/{FILE}", csv(EXISTING + NEW))
    poller.store.put(d)
    poller.run_import(d)
    done = finished(poller)
    assert (done.rows_total, done.rows_added, done.rows_updated, done.rows_failed) == (10, 7, 3, 0)
    assert done.status == "SUCCESSFUL" and done.message == ""
