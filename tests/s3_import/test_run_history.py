"""Run history with MoEngage's split (users created / updated / failed / skipped) and live states.

A users file of 10 rows, 7 new users and 3 existing ones, is imported from a real S3 folder; the poller
writes the rows and waits, PROCESSING, for the processors' outcomes. The outcomes are published here as
the processors publish them (``RejectedRecord`` on ``processors.rejected``, ``RecordOutcome`` on
``processors.outcomes``: the interface documented in ``producers/s3_import/outcomes.py``), and the result is
read where a user reads it: run history on the control topic and ``inflow imports show --json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.fernet import Fernet

from inflow.config.secrets import SecretBox
from inflow.config.settings import KafkaSettings
from inflow.producers.s3_import.outcomes import ADDED, FAILED_ROW, UPDATED, Pending, finish, origin_parts
from inflow.producers.s3_import.poller import Poller
from inflow.producers.s3_import.runs import RunRecord
from inflow.schemas.serde import AvroSerde
from tests.s3_import.conftest import repo_root
from tests.support import consume_n, consume_until_quiet, wait_for

KEY = Fernet.generate_key()
FILE = "registered_user_data_01012024.csv"
ROWS = "ID,First Name\n" + "".join(f"u{i},N{i}\n" for i in range(1, 11))


@pytest.fixture
def box() -> SecretBox:
    """The secret key the CLI subprocess is given too, so it reads the definitions the poller stored."""
    return SecretBox(KEY)


@pytest.fixture
def outcome_topics(catalogue_topics: KafkaSettings, topic_factory: Callable[..., str]) -> KafkaSettings:
    return catalogue_topics


def publish_outcomes(
    producer: Any, kafka: KafkaSettings, rows: list[dict[str, Any]], codes: dict[str, str]
) -> None:
    """What the processors publish for each applied file row: rejections as today, the rest as outcomes."""
    serde = AvroSerde()
    now = datetime.now(UTC)
    for row in rows:
        outcome = codes[row["customer_id"]]
        common = {
            "workspace_id": row["workspace_id"],
            "event_uuid": row["event_uuid"],
            "record_name": "UserUpsert",
            "origin": row["origin"],
            "request_id": row["request_id"],
        }
        if outcome in ("rejected", "skipped"):
            value = serde.encode(
                "RejectedRecord",
                common
                | {
                    "outcome": outcome,
                    "reason": "customer_id is blocked",
                    "record_json": "{}",
                    "rejected_at": now,
                },
            )
            producer.produce(kafka.topic("processors.rejected"), value, row["workspace_id"].encode())
        else:
            value = serde.encode(
                "RecordOutcome", common | {"outcome": outcome, "reason": "", "applied_at": now}
            )
            producer.produce(kafka.topic("processors.outcomes"), value, row["workspace_id"].encode())
    producer.flush(30)


def ingest_rows(consumer_factory: Callable[..., Any], kafka: KafkaSettings, n: int) -> list[dict[str, Any]]:
    msgs = consume_n(consumer_factory([kafka.topic("ingest.records")]), n)
    return [AvroSerde().decode(m.value())[1] for m in msgs]


def run_states(consumer_factory: Callable[..., Any], kafka: KafkaSettings, run_id: str) -> list[str]:
    """Every state the run's record went through, in order (the compacted topic still holds them all)."""
    msgs = consume_until_quiet(consumer_factory([kafka.topic("control.import-runs")]), quiet=2)
    states: list[str] = []
    for m in msgs:
        record = AvroSerde().decode(m.value())[1]
        if record["run_id"] == run_id and (not states or states[-1] != record["status"]):
            states.append(record["status"])
    return states


def test_origin_parts_and_first_outcome_wins() -> None:
    assert origin_parts("users/registered_user_data_01012024.csv/17") == (
        "users/registered_user_data_01012024.csv",
        17,
    )
    assert origin_parts("ingest.users/3/1200x") is None and origin_parts("17") is None
    run = RunRecord("r", "users", "b/f", FILE, 10, datetime.now(UTC), rows_written=3, rows_failed=1)
    p = Pending(run, bytearray(5))
    p.counts.update({ADDED: 1, UPDATED: 1, FAILED_ROW: 1})
    ended = finish(p, unconfirmed=0)
    assert (ended.rows_added, ended.rows_updated, ended.rows_failed) == (1, 1, 2)
    assert ended.status == "PARTIAL_SUCCESS" and ended.completed_at is not None


def test_users_file_reports_created_updated_and_failed_with_live_states(
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
    outcome_topics: KafkaSettings,
    consumer_factory: Callable[..., Any],
    producer_factory: Callable[..., Any],
    service_env: dict[str, str],
) -> None:
    kafka = outcome_topics
    d = definition(date_format="ddmmyyyy")
    put(f"in/users/{FILE}", ROWS)
    poller = poller_factory(track_outcomes=True)
    poller.store.put(d)
    (run,) = poller.run_import(d).files
    # Every row is in Kafka; what they did is not known yet: the file is PROCESSING, not SUCCESSFUL.
    assert (run.status, run.rows_written, run.rows_added, run.completed_at) == ("PROCESSING", 10, 0, None)
    assert run.message == "10 rows written; the processors are applying them"

    rows = sorted(ingest_rows(consumer_factory, kafka, 10), key=lambda r: int(r["customer_id"][1:]))
    codes = {f"u{i}": "created" for i in range(1, 8)} | {"u8": "updated", "u9": "updated", "u10": "rejected"}
    producer = producer_factory()
    publish_outcomes(producer, kafka, rows[:5], codes)
    publish_outcomes(producer, kafka, rows[:1], {"u1": "updated"})  # read twice: the first one counts
    assert poller.tracker is not None
    pending = poller.tracker.pending[f"{d.name}/{FILE}"]
    wait_for(lambda: poller.collect_outcomes() == [] and pending.applied == 5, 30, what="5 outcomes")
    live = _latest(poller, run.run_id)  # 5 of 10: still PROCESSING, with its progress
    assert live["status"] == "PROCESSING" and 1 <= live["rows_applied"] <= 5
    assert live["message"].startswith("10 rows written; the processors applied ")

    publish_outcomes(producer, kafka, rows[5:], codes)
    ended: list[RunRecord] = []
    wait_for(lambda: ended.extend(poller.collect_outcomes()) or ended, 30, what="the run to end")
    (done,) = ended
    got = (
        done.status,
        done.rows_total,
        done.rows_added,
        done.rows_updated,
        done.rows_failed,
        done.rows_skipped,
    )
    assert got == ("PARTIAL_SUCCESS", 10, 7, 2, 1, 0)
    assert done.message == "At least 1 row failed" and done.completed_at is not None
    assert run_states(consumer_factory, kafka, run.run_id) == ["QUEUED", "PROCESSING", "PARTIAL_SUCCESS"]

    env = service_env | {"INFLOW_SECRET_KEY": KEY.decode()}
    shown = subprocess.run(
        [sys.executable, "-m", "inflow.cli", "imports", "show", d.name, "--json"],
        env=env,
        cwd=repo_root(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    (item,) = json.loads(shown.stdout)["files"]
    assert {k: item[k] for k in ("file_name", "file_status", "status_msg", "type")} == {
        "file_name": FILE,
        "file_status": "PARTIAL_SUCCESS",
        "status_msg": "At least 1 row failed",
        "type": "USERS",
    }
    counts = (
        "total_rows",
        "added_rows",
        "updated_rows",
        "failed_rows",
        "skipped_rows",
        "aux_data_added_count",
    )
    assert [item[k] for k in counts] == [10, 7, 2, 1, 0, 0]
    assert int(item["file_size"]) == len(ROWS)


def _latest(poller: Poller, run_id: str) -> dict[str, Any]:
    poller.runs.refresh()
    return next(r for r in poller.runs.latest() if r["run_id"] == run_id)


def test_a_restarted_poller_finishes_the_runs_awaiting_outcomes(
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
    outcome_topics: KafkaSettings,
    consumer_factory: Callable[..., Any],
    producer_factory: Callable[..., Any],
) -> None:
    kafka = outcome_topics
    d = definition(date_format="ddmmyyyy")
    put(f"in/users/{FILE}", ROWS)
    first = poller_factory(track_outcomes=True)
    first.store.put(d)
    (run,) = first.run_import(d).files
    assert run.status == "PROCESSING"
    first.close()  # stopped before any outcome came back
    rows = ingest_rows(consumer_factory, kafka, 10)
    publish_outcomes(producer_factory(), kafka, rows, {f"u{i}": "created" for i in range(1, 11)})

    second = poller_factory(track_outcomes=True)  # same group: it owns the ledger partitions now
    ended: list[RunRecord] = []
    wait_for(lambda: ended.extend(second.collect_outcomes()) or ended, 60, what="the pending run to end")
    assert [(r.run_id, r.status, r.rows_added, r.rows_updated) for r in ended] == [
        (run.run_id, "SUCCESSFUL", 10, 0)
    ]


def test_rows_never_confirmed_end_the_run_after_the_apply_timeout(
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
    outcome_topics: KafkaSettings,
) -> None:
    d = definition(date_format="ddmmyyyy")
    put(f"in/users/{FILE}", ROWS)
    poller = poller_factory(track_outcomes=True, apply_timeout_seconds=1)
    poller.store.put(d)
    (run,) = poller.run_import(d).files
    assert run.status == "PROCESSING"
    ended: list[RunRecord] = []
    wait_for(lambda: ended.extend(poller.collect_outcomes()) or ended, 30, what="the timeout")
    (done,) = ended
    assert (done.status, done.rows_added, done.rows_updated) == ("SUCCESSFUL", 10, 0)
    assert done.message.startswith("10 written rows were not confirmed by the processors within ")
