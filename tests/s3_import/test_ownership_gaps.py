"""A file that falls due while its poller owns no ledger partition yet (at start, after a rebalance or a
broker outage) is imported once the partition is owned; found by the fault bench's broker restart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inflow.config.secrets import SecretBox
from inflow.config.settings import KafkaSettings
from inflow.producers.s3_import.poller import Poller
from inflow.producers.s3_import.settings import PollerSettings, SmtpSettings
from tests.s3_import.conftest import Inbox

CSV = "ID,First Name,LTV,Installed,First Seen\nu1,Ann,10.5,true,2024-01-02 03:04:05\n"


def test_a_one_time_import_due_before_the_poller_owns_its_partition_still_runs(
    definition: Callable[..., Any],
    put: Callable[..., None],
    catalogue_topics: KafkaSettings,
    box: SecretBox,
    smtp_inbox: tuple[Inbox, int],
    unique: str,
) -> None:
    put("in/users/registered_user_data_20240102.csv", CSV)
    poller = Poller(
        catalogue_topics,
        box,
        settings=PollerSettings(group_id=f"pollers-{unique}"),
        smtp=SmtpSettings(host="127.0.0.1", port=smtp_inbox[1]),
    )
    try:
        poller.store.put(definition())  # one-time, due at once
        first = poller.tick()  # the group has not given this poller its ledger partitions yet
        assert [s.not_owned for s in first] == [["registered_user_data_20240102.csv"]]
        assert [s.files for s in first] == [[]]
        assert poller.wait_for_partitions(90), "poller got no ledger partitions"
        second = poller.tick()
        assert [[r.file_name for r in s.files] for s in second] == [["registered_user_data_20240102.csv"]]
        assert second[0].files[0].status == "SUCCESSFUL"
        third = poller.tick()  # nothing newly owned, nothing newly due: the file is not looked at again
        assert third == []
    finally:
        poller.close()
