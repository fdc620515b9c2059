"""Faults under load with exact counts: the short variant of ``bench/faults_bench.py`` for the test suite.

The four components run as processes against the session's broker and S3 server; a steady Bulk API load
and one import file flow to a counting Streams endpoint while the worker and then the sink are SIGKILLed
and restarted and hostile bodies are sent beside the good traffic. Every accepted event must be delivered
(or in the DLQ with its reason), none under two event_uuids, and every hostile request must get a 4xx JSON
error. No timing is asserted: the waits are deadlines.
"""

from __future__ import annotations

from pathlib import Path

from bench.faults_bench import Scenario, details, kill_and_restart, run_scenario, table
from bench.faults_pipeline import Services
from inflow.config.settings import S3Settings


def test_worker_and_sink_killed_mid_load_beside_a_hostile_storm_lose_nothing(
    kafka_bootstrap: str, s3_settings: S3Settings, tmp_path: Path
) -> None:
    services = Services(kafka_bootstrap, s3_settings)
    scenario = Scenario(
        "kill-worker-then-sink-with-hostile-storm",
        [(6.0, kill_and_restart("worker")), (12.0, kill_and_restart("sink"))],
        load_s=20.0,
        import_at_s=2.0,
        import_rows=2_000,
        hostile=True,
        retry_delays_s=(1.0, 1.0, 1.0),
        settle_s=200.0,
    )
    result = run_scenario(services, scenario, tmp_path, rate=200.0, log=lambda _: None)
    report = details(result) + "\n" + table([result])
    assert not result.error, report
    assert result.import_status == "SUCCESSFUL", report
    assert result.accepted_bulk > 0 and result.accepted_import == 2_000, report
    assert result.missing == [], report
    assert result.split == [], report
    assert result.hostile and result.hostile_bad == 0, report
    assert result.delivered + result.in_dlq == result.accepted, report
    assert sum(1 for c in result.exit_codes["worker"] if c == -9) == 1, report
