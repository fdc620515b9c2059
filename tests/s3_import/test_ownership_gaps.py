"""A file that fell due while its poller owned no ledger partition (at start, after a rebalance or a broker
outage) is imported once the poller owns its partition; found by the fault bench's broker restart.

The state such a tick leaves is set up directly: the import's latest occurrence is recorded as run
(``last_due``) while no partition had been seen as owned; before the fix the poller never looked at that
one-time import again."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from inflow.producers.s3_import.poller import Poller

CSV = "ID,First Name,LTV,Installed,First Seen\nu1,Ann,10.5,true,2024-01-02 03:04:05\n"


def test_a_one_time_import_that_fell_due_while_nothing_was_owned_runs_once_owned(
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
) -> None:
    put("in/users/registered_user_data_20240102.csv", CSV)
    poller = poller_factory()  # owns its ledger partitions now; no tick has run
    poller.store.put(definition())  # one-time, due at once
    stored = next(iter(poller.store.definitions.values()))
    now = datetime.now(UTC)
    due = stored.schedule.latest_due(now, stored.created_at or now)
    assert due is not None
    poller.last_due[stored.name] = due  # the scheduled run happened while no partition was owned
    second = poller.tick(now)
    assert [[r.file_name for r in s.files] for s in second] == [["registered_user_data_20240102.csv"]]
    assert second[0].files[0].status == "SUCCESSFUL"
    assert poller.tick(now) == []  # nothing newly owned, nothing newly due: not looked at again
