"""``inflow workspaces disable`` stops the workspace's imports too: its files stay pending (run history and
the log say why) and are imported, once, when the workspace is enabled again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inflow.config.settings import KafkaSettings
from inflow.producers.s3_import.ledger import ledger_key
from inflow.producers.s3_import.poller import Poller
from inflow.producers.s3_import.runs import RunStore
from inflow.schemas.serde import AvroSerde
from inflow.workspaces.keys import hash_key
from inflow.workspaces.registry import Workspace, WorkspaceRegistry
from tests.support import consume_n, consume_until_quiet, wait_for

FILE = "registered_user_data_01012024.csv"


def test_imports_of_a_disabled_workspace_wait_until_it_is_enabled(
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
    catalogue_topics: KafkaSettings,
    consumer_factory: Callable[..., Any],
    bucket: str,
    unique: str,
) -> None:
    workspace = f"ws-{unique}"
    registry = WorkspaceRegistry(catalogue_topics, AvroSerde())
    registry.create(Workspace(id=workspace, key_hash=hash_key("a key")))
    registry.set_disabled(workspace, True)
    d = definition(workspace_id=workspace, date_format="ddmmyyyy")
    put(f"in/users/{FILE}", "ID,First Name\nu1,Ann\nu2,Bob\n")
    poller = poller_factory()
    wait_for(lambda: getattr(poller.workspaces.get(workspace), "disabled", False), 30, what="disabled seen")
    poller.store.put(d)

    reason = f"workspace {workspace} is disabled: the file waits until it is enabled"
    (summary,) = poller.tick()
    assert (summary.files, summary.skipped) == ([], {FILE: reason})
    assert poller.ledger.get(ledger_key(d.name, bucket, d.folder, FILE)) is None  # not claimed: pending
    runs = RunStore(catalogue_topics, AvroSerde())
    assert [(r["file_name"], r["status"], r["message"]) for r in runs.history(d.name, timeout=10)] == [
        (FILE, "WAITING", reason)
    ]
    assert poller.tick() == []  # still disabled: nothing runs

    registry.set_disabled(workspace, False)
    ran = wait_for(lambda: poller.tick(), 30, what="the import running once the workspace is enabled")
    assert [(r.file_name, r.status, r.rows_added) for s in ran for r in s.files] == [(FILE, "SUCCESSFUL", 2)]
    assert [(r["file_name"], r["status"]) for r in runs.history(d.name, timeout=10)] == [(FILE, "SUCCESSFUL")]
    assert poller.tick() == []  # imported once
    consumer = consumer_factory([catalogue_topics.topic("ingest.records")])
    msgs = consume_n(consumer, 2) + consume_until_quiet(consumer, quiet=3)
    assert sorted(m.key() for m in msgs) == [f"{workspace}:u1".encode(), f"{workspace}:u2".encode()]
