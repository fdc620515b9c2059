"""Portfolio routing of imports (reference §4.6): a column mapped to ``moe_project_name`` sends each row to
the project of that exact (case-sensitive) code or name; no match or an empty cell stays on the
portfolio's own workspace ("global level"). Real S3 files, a real poller, rows read from the ingest topic."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from inflow.config.settings import KafkaSettings
from inflow.producers.s3_import.exceptions import RowError
from inflow.producers.s3_import.poller import Poller
from inflow.producers.s3_import.projects import ProjectRouting, routing_for
from inflow.schemas.serde import AvroSerde
from inflow.workspaces.keys import hash_key
from inflow.workspaces.portfolio import Project
from inflow.workspaces.registry import Workspace, WorkspaceRegistry
from tests.support import consume_n, consume_until_quiet, wait_for

USERS = "registered_user_data_01012024.csv"
EVENTS = "Purchase_01012024.csv"
PROJECT_COLUMN = {"column": "Project", "moe_attr": "moe_project_name"}


@pytest.fixture
def portfolio(catalogue_topics: KafkaSettings, unique: str) -> dict[str, str]:
    """A portfolio with projects A, B ("Brand B") and C (its workspace disabled), made through the
    registry as ``inflow workspaces projects add`` does."""
    ids = {name: f"{name}-{unique}" for name in ("PORT", "A", "B", "C")}
    registry = WorkspaceRegistry(catalogue_topics, AvroSerde())
    try:
        for ws in ids.values():
            registry.create(Workspace(id=ws, key_hash=hash_key("a key")))
        registry.add_project(ids["PORT"], Project("A", ids["A"]))
        registry.add_project(ids["PORT"], Project("B", ids["B"], "Brand B"))
        registry.add_project(ids["PORT"], Project("C", ids["C"]))
        registry.set_disabled(ids["C"], True)
    finally:
        registry.stop()
    return ids


def seen_by(poller: Poller, ids: dict[str, str]) -> None:
    def ready() -> bool:
        port, c = poller.workspaces.get(ids["PORT"]), poller.workspaces.get(ids["C"])
        return port is not None and len(port.projects) == 3 and c is not None and c.disabled

    wait_for(ready, 30, what="the portfolio on the poller")


def read_rows(consumer_factory: Callable[..., Any], kafka: KafkaSettings, n: int) -> list[tuple[bytes, dict]]:
    consumer = consumer_factory([kafka.topic("ingest.records")])
    msgs = consume_n(consumer, n) + consume_until_quiet(consumer, quiet=2)
    assert len(msgs) == n
    return [(m.key(), AvroSerde().decode(m.value())[1]) for m in msgs]


def test_users_rows_go_to_the_named_project_and_the_rest_to_the_portfolio(
    portfolio: dict[str, str],
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
    consumer_factory: Callable[..., Any],
    catalogue_topics: KafkaSettings,
) -> None:
    mappings = [{"column": "ID", "moe_attr": "uid"}, {"column": "First Name", "moe_attr": "u_fn"}]
    d = definition(
        workspace_id=portfolio["PORT"], date_format="ddmmyyyy", mappings=[*mappings, PROJECT_COLUMN]
    )
    rows = [
        ("u1", "Ann", "A"),  # code
        ("u2", "Bob", "Brand B"),  # name
        ("u3", "Cid", "a"),  # case differs: no match
        ("u4", "Dan", ""),  # empty: global
        ("u5", "Eve", "Z"),  # unknown: global
        ("u6", "Fay", "B"),
        ("u7", "Gus", "C"),  # the project's workspace is disabled: the row fails with the reason
    ]
    put(f"in/users/{USERS}", "ID,First Name,Project\n" + "".join(",".join(r) + "\n" for r in rows))
    poller = poller_factory()
    seen_by(poller, portfolio)
    poller.store.put(d)
    (summary,) = poller.run_import(d).files
    assert (summary.status, summary.rows_total, summary.rows_added, summary.rows_failed) == (
        "PARTIAL_SUCCESS",
        7,
        6,
        1,
    )
    records = read_rows(consumer_factory, catalogue_topics, 6)
    where = {rec["customer_id"]: rec["workspace_id"] for _, rec in records}
    assert where == {
        "u1": portfolio["A"],
        "u2": portfolio["B"],
        "u3": portfolio["PORT"],
        "u4": portfolio["PORT"],
        "u5": portfolio["PORT"],
        "u6": portfolio["B"],
    }
    for key, rec in records:
        assert key == f"{rec['workspace_id']}:{rec['customer_id']}".encode()  # the project's partitioning
        assert json.loads(rec["attributes_json"]) == {
            "u_fn": dict((r[0], r[1]) for r in rows)[rec["customer_id"]]
        }
    assert summary.error_report_key is not None


def test_events_rows_are_routed_the_same_way(
    portfolio: dict[str, str],
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
    consumer_factory: Callable[..., Any],
    catalogue_topics: KafkaSettings,
) -> None:
    mappings = [
        {"column": "user", "moe_attr": "uid"},
        {"column": "time", "moe_attr": "event_time", "type": "datetime", "datetime_format": "YYYY-MM-DD"},
        PROJECT_COLUMN,
    ]
    d = definition(
        name=f"events-{portfolio['PORT']}",
        workspace_id=portfolio["PORT"],
        type="events",
        event_name="Purchase",
        folder="in/events",
        date_format="ddmmyyyy",
        mappings=mappings,
    )
    put(f"in/events/{EVENTS}", "user,time,Project\ne1,2024-01-01,A\ne2,2024-01-01,Brand B\ne3,2024-01-01,\n")
    poller = poller_factory()
    seen_by(poller, portfolio)
    poller.store.put(d)
    (summary,) = poller.run_import(d).files
    assert (summary.status, summary.rows_added) == ("SUCCESSFUL", 3)
    where = {
        rec["customer_id"]: (rec["workspace_id"], rec["action"])
        for _, rec in read_rows(consumer_factory, catalogue_topics, 3)
    }
    assert where == {
        "e1": (portfolio["A"], "Purchase"),
        "e2": (portfolio["B"], "Purchase"),
        "e3": (portfolio["PORT"], "Purchase"),
    }


def test_routing_is_only_made_for_a_portfolio() -> None:
    plain = Workspace("PLAIN", "h")
    port = Workspace("PORT", "h", projects=(Project("A", "WA", "Alpha"), Project("D", "WD")))
    found = {
        "PLAIN": plain,
        "PORT": port,
        "WA": Workspace("WA", "h"),
        "WD": Workspace("WD", "h", disabled=True),
    }
    assert routing_for("PLAIN", found.get) is None
    assert routing_for("MISSING", found.get) is None
    routing = routing_for("PORT", found.get)
    assert routing == ProjectRouting("PORT", {"A": "WA", "Alpha": "WA", "D": "WD"}, frozenset({"WD"}))
    assert [routing.workspace_for(v) for v in ("A", "Alpha", "alpha", "", None, 7)] == [
        "WA",
        "WA",
        "PORT",
        "PORT",
        "PORT",
        "PORT",
    ]
    with pytest.raises(RowError, match="moe_project_name 'D': the project's workspace WD is disabled"):
        routing.workspace_for("D")
