"""§4.5 "With IR on, any configured identifier can be mapped", end to end: S3 files (the session's real S3
server) whose rows are identified by an e-mail column instead of User ID, imported by a poller, applied by a
real ``inflow worker``, read back through Get User on a real gateway and on the profiles and events topics.
The gateway seeds ``control.workspaces`` (WSIR: customer_id, moe_mobile, email; WS1: customer_id only),
which both the poller's definition check and the worker follow."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests

from inflow.config.settings import KafkaSettings
from inflow.local.process import free_port
from inflow.producers.bulk_api.settings import GatewaySettings
from inflow.producers.s3_import.exceptions import DefinitionError
from inflow.producers.s3_import.poller import Poller
from inflow.producers.s3_import.runs import RunRecord
from inflow.schemas.serde import AvroSerde
from inflow.workspaces.registry import WorkspaceRegistry
from tests.bulk_api.conftest import IR_KEY, IR_WS, basic, seed_workspaces, start_in_process
from tests.processors.workers import WorkerProcess, output_reader, worker_env
from tests.support import wait_for

USERS_FILE = "registered_user_data_01012024.csv"
EVENTS_FILE = "Purchase_01012024.csv"
BY_EMAIL = {"column": "Email", "moe_attr": "u_em", "role": "identifier"}
EVENT_TIME = {
    "column": "time",
    "moe_attr": "event_time",
    "type": "datetime",
    "datetime_format": "YYYY-MM-DDThh:mm:ssTZD",
}


@pytest.fixture
def gateway_url(catalogue_topics: KafkaSettings, tmp_path: Path) -> Iterator[str]:
    """A gateway: it seeds control.workspaces, and answers Get User from the profiles topic."""
    port = free_port()
    settings = GatewaySettings(port=port, profile_store_dir=tmp_path / "profiles")
    gateway, shutdown = start_in_process(catalogue_topics, settings, seed_workspaces())
    try:
        wait_for(lambda: all(gateway.views().values()), 60, what="gateway views")
        yield f"http://127.0.0.1:{port}"
    finally:
        shutdown()


@pytest.fixture
def pipeline(
    catalogue_topics: KafkaSettings, tmp_path: Path, poller_factory: Callable[..., Poller], gateway_url: str
) -> Iterator[tuple[str, Poller, Any, WorkerProcess]]:
    """The gateway, a worker and a poller that waits for the worker's outcomes."""
    workspaces = [{"id": IR_WS, "identifiers": ["customer_id", "moe_mobile", "email"]}]
    worker = WorkerProcess(
        "w",
        worker_env(catalogue_topics, tmp_path / "home", workspaces),
        tmp_path / "data",
        tmp_path / "w.log",
    ).start()
    out = output_reader(catalogue_topics)
    try:
        poller = poller_factory(track_outcomes=True, apply_timeout_seconds=60)
        yield gateway_url, poller, out, worker
    except AssertionError:
        print(worker.tail())
        raise
    finally:
        out.consumer.close()
        assert worker.terminate() == 0


def get_users(url: str, kind: str, *values: str) -> dict[str, Any]:
    body = {"data": {"identifiers": [{"identifier_type": kind, "identifier": v} for v in values]}}
    resp = requests.post(
        f"{url}/v1/customers/export?app_id={IR_WS}",
        json=body,
        headers={"Authorization": basic(IR_WS, IR_KEY)},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["data"])


def finished(poller: Poller, file_name: str) -> RunRecord:
    ended: list[RunRecord] = []
    wait_for(
        lambda: ended.extend(r for r in poller.collect_outcomes() if r.file_name == file_name) or ended,
        120,
        what=f"the run of {file_name} to end",
    )
    return ended[0]


def test_users_and_events_files_identified_by_email(
    pipeline: tuple[str, Poller, Any, WorkerProcess],
    definition: Callable[..., Any],
    put: Callable[..., None],
    s3: Any,
    bucket: str,
) -> None:
    url, poller, out, worker = pipeline
    users = definition(
        workspace_id=IR_WS,
        date_format="ddmmyyyy",
        mappings=[BY_EMAIL, {"column": "Name", "moe_attr": "u_n"}],
    )
    put(
        f"in/users/{USERS_FILE}",
        "Email,Name\nann@x.io,Ann\n,Nobody\nbob@x.io,Bob\n",  # row 3 has no e-mail: it fails alone
    )
    poller.store.put(users)
    poller.run_import(users)
    run = finished(poller, USERS_FILE)
    assert (run.rows_total, run.rows_added, run.rows_updated, run.rows_failed) == (3, 2, 0, 1)
    assert run.status == "PARTIAL_SUCCESS"
    assert run.error_report_key
    report = s3.get_object(Bucket=bucket, Key=run.error_report_key)["Body"].read().decode()
    assert "Column value for the selected identifier attribute (u_em) is absent" in report
    assert report.splitlines()[1].startswith("2,")  # data rows are numbered from 1

    # Get User by the e-mail identifier: two users made by their e-mail, no customer_id.
    def both_known() -> bool:
        worker.assert_running()
        return len(get_users(url, "email", "ann@x.io", "bob@x.io")["users"]) == 2

    wait_for(both_known, 60, what="the two users through Get User")
    found = {
        u["user_attributes"]["u_em"]: u["user_attributes"]
        for u in get_users(url, "email", "ann@x.io", "bob@x.io")["users"]
    }
    assert (found["ann@x.io"]["u_n"], found["bob@x.io"]["u_n"]) == ("Ann", "Bob")
    uids = {email: attrs["moengage_id"] for email, attrs in found.items()}
    wait_for(out.until(lambda o: set(uids.values()) <= {p["uid"] for p in o.profiles}, [worker]), 60)
    profiles = out.latest_profiles()
    assert {profiles[uid]["identifiers"]["email"] for uid in uids.values()} == {"ann@x.io", "bob@x.io"}
    assert all(profiles[uid]["customer_id"] is None for uid in uids.values())

    # An events file keyed by the same e-mail column enriches those users; an unknown e-mail makes a user.
    events = definition(
        name=f"{users.name}-events",
        workspace_id=IR_WS,
        type="events",
        event_name="Purchase",
        folder="in/events",
        date_format="ddmmyyyy",
        mappings=[
            {"column": "Email", "moe_attr": "email", "role": "identifier"},
            EVENT_TIME,
            {"column": "amount", "moe_attr": "amount", "type": "double"},
        ],
    )
    put(
        f"in/events/{EVENTS_FILE}",
        "Email,time,amount\n"
        "ann@x.io,2024-01-01T10:00:00Z,10\n"
        "bob@x.io,2024-01-01T11:00:00Z,20\n"
        "cy@x.io,2024-01-01T12:00:00Z,30\n"
        ",2024-01-01T13:00:00Z,40\n",
    )
    poller.store.put(events)
    poller.run_import(events)
    run = finished(poller, EVENTS_FILE)
    assert (run.rows_total, run.rows_added, run.rows_failed) == (4, 3, 1)

    def purchases(o: Any) -> bool:
        return len([e for e in o.events if e["event_code"] == "Purchase"]) == 3

    wait_for(out.until(purchases, [worker]), 60, what="three enriched purchases")
    by_amount = {
        json.loads(e["event_attributes_json"])["amount"]: e
        for e in out.events
        if e["event_code"] == "Purchase"
    }
    assert by_amount[10.0]["uid"] == uids["ann@x.io"]
    assert json.loads(by_amount[10.0]["user_attributes_json"])["u_n"] == "Ann"
    assert by_amount[20.0]["uid"] == uids["bob@x.io"]
    assert json.loads(by_amount[20.0]["user_attributes_json"])["u_n"] == "Bob"
    assert by_amount[30.0]["uid"] not in uids.values()  # a user made for the new e-mail
    wait_for(
        lambda: len(get_users(url, "email", "cy@x.io")["users"]) == 1, 60, what="the new user of cy@x.io"
    )
    assert out.rejected == []


def test_identity_columns_the_workspace_cannot_resolve_are_refused_with_the_reason(
    gateway_url: str, poller_factory: Callable[..., Poller], definition: Callable[..., Any]
) -> None:
    poller = poller_factory()
    mappings = [BY_EMAIL, {"column": "Name", "moe_attr": "u_n"}]
    no_ir = definition(name="no-ir", workspace_id="WS1", mappings=mappings)  # customer_id only
    with pytest.raises(DefinitionError, match="workspace WS1 has identity resolution off"):
        poller.store.put(no_ir)
    phone = [{"column": "Phone", "moe_attr": "phone", "role": "identifier"}]
    not_configured = definition(name="by-phone", workspace_id=IR_WS, mappings=phone)
    with pytest.raises(
        DefinitionError,
        match="phone is not an identifier of workspace WSIR .its identifiers: customer_id, moe_mobile, email",
    ):
        poller.store.put(not_configured)
    unknown = definition(name="nowhere", workspace_id="NO-SUCH-WS", mappings=mappings)
    with pytest.raises(DefinitionError, match="workspace NO-SUCH-WS is not known"):
        poller.store.put(unknown)
    assert {"no-ir", "by-phone", "nowhere"}.isdisjoint(poller.store.definitions)
    # A workspace only the YAML file declares (the gateway has not seeded it yet) counts, as for the workers.
    poller.configured_identifiers = {"FILE-WS": ["customer_id", "email"]}
    from_file = definition(name="from-file", workspace_id="FILE-WS", mappings=mappings)
    assert poller.store.put(from_file).identity is not None


def test_a_file_without_the_identity_column_or_after_ir_is_switched_off_fails_with_the_reason(
    gateway_url: str,
    poller_factory: Callable[..., Poller],
    definition: Callable[..., Any],
    put: Callable[..., None],
    catalogue_topics: KafkaSettings,
) -> None:
    poller = poller_factory()
    d = definition(
        workspace_id=IR_WS, date_format="ddmmyyyy", mappings=[BY_EMAIL, {"column": "Name", "moe_attr": "u_n"}]
    )
    poller.store.put(d)
    put(f"in/users/{USERS_FILE}", "Name\nAnn\n")  # the e-mail column is not in the file
    (run,) = poller.run_import(d).files
    assert run.status == "FAILED"
    assert run.message == "Column value for the selected identifier attribute (u_em) is absent in the file"

    # Identity resolution switched off for the workspace after the import was defined: its next file fails.
    registry = WorkspaceRegistry(catalogue_topics, AvroSerde()).load()
    workspace = registry.get(IR_WS)
    assert workspace is not None
    registry.publish(replace(workspace, identifiers=()))
    registry.stop()
    wait_for(
        lambda: poller.identifiers_of(IR_WS) == ("customer_id",), 30, what="the poller to see the change"
    )
    put(f"in/users/{USERS_FILE.replace('01012024', '02012024')}", "Email,Name\nann@x.io,Ann\n")
    (run,) = poller.run_import(d).files
    assert run.status == "FAILED"
    assert "workspace WSIR has identity resolution off" in run.message
