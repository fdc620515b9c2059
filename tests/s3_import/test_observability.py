"""The poller's /metrics and /health as a real process, its JSON logs, and ``inflow imports run --follow``
reading run records from the control topic."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.fernet import Fernet

from inflow.config.settings import KafkaSettings, S3Settings
from inflow.local.process import free_port
from inflow.producers.s3_import.follow import RunFollower
from inflow.producers.s3_import.runs import RunRecord, RunStore
from inflow.schemas.serde import AvroSerde
from tests.s3_import.conftest import repo_root
from tests.s3_import.test_cli import definition_file, inflow
from tests.support import wait_for

ROWS = 40


def scrape(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def sample(text: str, prefix: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_poller_serves_import_metrics_health_and_json_logs(
    service_env: dict[str, str],
    catalogue_topics: KafkaSettings,
    s3_settings: S3Settings,
    bucket: str,
    put: Callable[..., None],
    tmp_path: Path,
    unique: str,
) -> None:
    name = f"obs-{unique}"
    env = service_env | {
        "INFLOW_SECRET_KEY": Fernet.generate_key().decode(),
        "INFLOW_POLLER_GROUP_ID": f"obs-{unique}",
        "INFLOW_POLLER_TICK_SECONDS": "1",
        "INFLOW_LOG_FORMAT": "json",
    }
    rows = "".join(f"u{i},N{i}\n" for i in range(ROWS - 2)) + ",no id\n" + "\n"  # one bad row, one empty
    put("cli/registered_user_data_20240101.csv", "ID,First Name\n" + rows)
    added = inflow(env, "imports", "add", str(definition_file(tmp_path, s3_settings, bucket, name)))
    assert added.returncode == 0, added.stdout
    port = free_port()
    log = tmp_path / "poller.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inflow.cli", "poller", "--metrics-port", str(port)],
            env=env,
            cwd=repo_root(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        done = f'inflow_import_files_total{{import_name="{name}",status="PARTIAL_SUCCESS",workspace="WS1"}}'
        text = wait_for(
            lambda: (t := scrape(base + "/metrics")[1]) and done in t and t,
            120,
            what=f"the file counted as imported; log:\n{log.read_text(errors='replace')[-3000:]}",
        )
        topic = catalogue_topics.topic("ingest.records")
        labels = f'import_name="{name}",state="%s",topic="{topic}",workspace="WS1"'
        assert sample(text, "inflow_import_rows_total{" + labels % "added" + "}") == ROWS - 2
        assert sample(text, "inflow_import_rows_total{" + labels % "failed" + "}") == 1
        assert sample(text, 'inflow_import_file_seconds_count{workspace="WS1"}') == 1
        assert sample(text, 'inflow_import_files_running{workspace="WS1"}') == 0
        code, body = wait_for(lambda: (r := scrape(base + "/health"))[0] == 200 and r, 60, what="healthy")
        report = json.loads(body)
        assert report["component"] == "poller" and report["status"] == "ok"
        assert set(report["checks"]) == {"loop", "workspaces"}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    lines = [x for x in log.read_text().splitlines() if x.strip() and not x.startswith("%")]
    parsed = [json.loads(x) for x in lines]  # every log line of Python's logging is one JSON object
    assert parsed and all({"time", "level", "component", "logger", "message"} <= p.keys() for p in parsed)
    assert {p["component"] for p in parsed} == {"poller"}
    assert any("metrics on" in p["message"] for p in parsed)


def test_run_follow_shows_state_and_rate_until_the_file_ends(
    service_env: dict[str, str],
    catalogue_topics: KafkaSettings,
    s3_settings: S3Settings,
    bucket: str,
    put: Callable[..., None],
    tmp_path: Path,
    unique: str,
) -> None:
    name = f"follow-{unique}"
    env = service_env | {
        "INFLOW_SECRET_KEY": Fernet.generate_key().decode(),
        "INFLOW_POLLER_GROUP_ID": f"follow-{unique}",
    }
    body = "ID,First Name\n" + "".join(f"u{i},N\n" for i in range(5000))
    put("cli/registered_user_data_20240102.csv", body)
    added = inflow(env, "imports", "add", str(definition_file(tmp_path, s3_settings, bucket, name)))
    assert added.returncode == 0, added.stdout
    run = inflow(env, "imports", "run", name, "--follow", "--timeout", "150")
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    # Progress lines name each state the follower saw (PROCESSING ones when it read them mid-file); the
    # follow ends on the final state, and the summary comes after it.
    final = "registered_user_data_20240102.csv: SUCCESSFUL 5000 rows ("
    assert final in out and " rows/s)" in out
    assert out.index(final) < out.rindex("SUCCESSFUL rows 5000 added 5000")
    assert "PROCESSING" not in out[out.index(final) :]

    missing = inflow(env, "imports", "run", "no-such-import", "--follow")
    assert missing.returncode == 2 and "no import named 'no-such-import'" in missing.stdout


def test_follower_keeps_the_latest_record_of_each_file_of_the_run(catalogue_topics: KafkaSettings) -> None:
    runs = RunStore(catalogue_topics, AvroSerde())
    now = datetime.now(UTC)
    old = RunRecord("r-old", "imp", "b/f", "old.csv", 10, now - timedelta(hours=1))
    old.finish("SUCCESSFUL", "")
    first = RunRecord("r-1", "imp", "b/f", "a.csv", 10, now)
    other = RunRecord("r-x", "another", "b/f", "a.csv", 10, now)
    try:
        for record in (old, first, other):
            runs.write(record)
        follower = RunFollower(catalogue_topics, AvroSerde(), "imp", now - timedelta(seconds=1)).open()
        try:
            files = follower.files()
            assert list(files) == ["a.csv"] and files["a.csv"].status == "PROCESSING"
            assert not files["a.csv"].final
            first.rows_total = first.rows_added = 10
            first.finish("SUCCESSFUL", "")
            runs.write(first)
            wait_for(lambda: (follower.pump(0.5), follower.files()["a.csv"].final)[1], 30, what="final")
            state = follower.files()["a.csv"]
            assert state.rows_total == 10 and state.rows_per_second() > 0
        finally:
            follower.close()
    finally:
        runs.close()
