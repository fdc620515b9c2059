"""S3 outages are the infrastructure's fault, not the file's: the file is retried with backoff, run history
shows it RETRYING with the reason, it is never marked FAILED, and once S3 is back it is imported exactly
once. The S3 server is real; a proxy in front of it refuses connections or cuts downloads mid-stream."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from inflow.config.settings import KafkaSettings, S3Settings
from inflow.producers.s3_import.ledger import ledger_key
from inflow.producers.s3_import.poller import Poller, RunSummary
from inflow.producers.s3_import.runs import RunStore
from inflow.schemas.serde import AvroSerde
from tests.s3_import.faults import CUT, UP, FaultyProxy
from tests.support import consume_n, consume_until_quiet, wait_for

FIRST = "registered_user_data_01012024.csv"
SECOND = "registered_user_data_02012024.csv"


@pytest.fixture
def proxy(s3_settings: S3Settings) -> Iterator[FaultyProxy]:
    faulty = FaultyProxy(str(s3_settings.endpoint_url), cut_after=200)
    yield faulty
    faulty.stop()


def statuses(summaries: list[RunSummary]) -> dict[str, str]:
    return {r.file_name: r.status for s in summaries for r in s.files}


def test_s3_outage_is_retried_with_backoff_and_the_file_is_never_failed(
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
    proxy: FaultyProxy,
    catalogue_topics: KafkaSettings,
    consumer_factory: Callable[..., Any],
    bucket: str,
) -> None:
    d = definition(endpoint_url=proxy.url, date_format="ddmmyyyy")
    put(f"in/users/{FIRST}", "ID,First Name\n" + "".join(f"u{i},x\n" for i in range(100)))
    put(f"in/users/{SECOND}", "ID,First Name\n" + "".join(f"v{i},y\n" for i in range(50)))
    poller = poller_factory(retry_min_seconds=0.5, retry_max_seconds=1)
    poller.store.put(d)

    # S3 unreachable: nothing listens on its port. The listing fails; no file is touched.
    (down,) = poller.tick()
    assert down.files == [] and down.error is not None
    assert down.error.startswith("cannot reach S3") and "retrying in" in down.error

    # S3 answers, but every download breaks off mid-stream: the files wait to be retried, claimed.
    proxy.mode = CUT
    proxy.start()
    seen: dict[str, str] = {}
    wait_for(
        lambda: seen.update(statuses(poller.tick())) or seen == {FIRST: "RETRYING", SECOND: "RETRYING"},
        120,
        what="both files retrying",
    )
    for name in (FIRST, SECOND):
        entry = poller.ledger.get(ledger_key(d.name, bucket, d.folder, name))
        assert entry is not None and entry["state"] == "CLAIMED"
    history = {r["file_name"]: r for r in RunStore(catalogue_topics, AvroSerde()).history(d.name, timeout=10)}
    assert {n: r["status"] for n, r in history.items()} == {FIRST: "RETRYING", SECOND: "RETRYING"}
    assert history[FIRST]["message"].startswith("S3 unavailable: ")
    assert "retry " in history[FIRST]["message"]

    # S3 is back: each file is imported once, resuming after the rows already sent.
    proxy.mode = UP
    done: dict[str, Any] = {}

    def imported() -> bool:
        for summary in poller.tick():
            done.update({r.file_name: r for r in summary.files if r.status != "RETRYING"})
        return len(done) == 2

    wait_for(imported, 120, what="both files imported after the outage")
    got = {n: (r.status, r.rows_total, r.rows_added, r.rows_failed) for n, r in done.items()}
    assert got == {FIRST: ("SUCCESSFUL", 100, 100, 0), SECOND: ("SUCCESSFUL", 50, 50, 0)}
    assert proxy.cut_requests  # the downloads really were cut
    every_state = [
        AvroSerde().decode(m.value())[1]["status"]
        for m in consume_until_quiet(consumer_factory([catalogue_topics.topic("control.import-runs")]))
    ]
    assert "RETRYING" in every_state and "FAILED" not in every_state
    consumer = consumer_factory([catalogue_topics.topic("ingest.records")])
    msgs = consume_n(consumer, 150) + consume_until_quiet(consumer, quiet=3)
    assert len(msgs) == len({m.key() for m in msgs}) == 150  # every row once: none lost, none sent twice
