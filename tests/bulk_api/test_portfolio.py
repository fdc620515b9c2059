"""Portfolio workspaces over real HTTP (reference §3): calls with the portfolio's credentials and
``?project_code=`` land on the project's workspace, read back through a real worker and Get User, and on
the ingest topic for every route; a missing, unknown or misplaced code is a 400 that stores nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inflow.config.file import ProjectConfig, RateLimits, WorkspaceConfig
from inflow.config.settings import KafkaSettings
from inflow.local.process import free_port
from inflow.producers.bulk_api.gateway import Gateway
from inflow.producers.bulk_api.settings import GatewaySettings
from inflow.workspaces.exceptions import WorkspaceError
from inflow.workspaces.portfolio import Project
from inflow.workspaces.registry import Workspace
from tests.bulk_api.conftest import KEY, WS, seed_workspaces
from tests.processors.workers import WorkerProcess, output_reader, worker_env
from tests.support import consume_until_quiet, wait_for

PORT, PORT_KEY = "PORT1", "port1-data-api-key"
PA, PB = "PROJ-A", "PROJ-B"
TOPIC = "ingest.records"


def portfolio_seeds(a_users_per_minute: int = 10_000) -> list[WorkspaceConfig]:
    """The usual test workspaces, two project workspaces without keys of their own, and the portfolio
    (declared before its projects: the seed sets projects once every workspace exists)."""
    return [
        *seed_workspaces(),
        WorkspaceConfig(
            id=PORT,
            api_key=PORT_KEY,
            projects=[
                ProjectConfig(code="A", workspace=PA),
                ProjectConfig(code="B", workspace=PB, name="Brand B"),
            ],
        ),
        WorkspaceConfig(id=PA, rate_limits=RateLimits(users_per_minute=a_users_per_minute)),
        WorkspaceConfig(id=PB),
    ]


@pytest.fixture
def pgw(gateway_factory):
    return gateway_factory(seeds=portfolio_seeds())


def post(gw, path: str, body: Any) -> Any:
    return gw.post(path, body, auth=(PORT, PORT_KEY))


def get_user(gw, code: str, customer_id: str) -> list[dict[str, Any]]:
    asked = {"data": {"identifiers": [{"identifier_type": "customer_id", "identifier": customer_id}]}}
    resp = post(gw, f"/v1/customers/export?app_id={PORT}&project_code={code}", asked)
    assert resp.status_code == 200, resp.text
    return [u["user_attributes"] for u in resp.json()["data"]["users"]]


def test_the_config_file_makes_a_portfolio_of_two_projects(pgw) -> None:
    portfolio = pgw.gateway.directory.get(PORT)
    assert portfolio is not None and portfolio.projects == (
        Project("A", PA),
        Project("B", PB, "Brand B"),
    )
    assert pgw.gateway.directory.portfolio_of(PA) == PORT
    listed = portfolio.public()["projects"]
    assert listed == [
        {"code": "A", "name": None, "workspace_id": PA},
        {"code": "B", "name": "Brand B", "workspace_id": PB},
    ]


def test_each_projects_data_lands_on_its_own_workspace_and_get_user_reads_it_there(
    pgw, catalogue_topics: KafkaSettings, tmp_path: Path
) -> None:
    worker = WorkerProcess(
        "port", worker_env(catalogue_topics, tmp_path / "home", []), tmp_path / "d", tmp_path / "w.log"
    )
    worker.start()
    out = output_reader(catalogue_topics)
    try:
        for code, plan in (("A", "alpha"), ("B", "beta")):
            elements = [
                {"type": "customer", "customer_id": "shared-user", "attributes": {"plan": plan}},
                {"type": "event", "customer_id": "shared-user", "actions": [{"action": f"Joined{code}"}]},
            ]
            resp = post(
                pgw,
                f"/v1/transition/{PORT}?project_code={code}",
                {"type": "transition", "elements": elements},
            )
            assert resp.status_code == 200, resp.text

        def both_known() -> bool:
            worker.assert_running()
            return bool(get_user(pgw, "A", "shared-user")) and bool(get_user(pgw, "B", "shared-user"))

        wait_for(both_known, 120, what="the user in both projects through Get User")
        # One customer id, two users: each project is a workspace of its own.
        assert [u.get("plan") for u in get_user(pgw, "A", "shared-user")] == ["alpha"]
        assert [u.get("plan") for u in get_user(pgw, "B", "shared-user")] == ["beta"]
        wait_for(out.until(lambda o: len(o.events) >= 2, [worker]), 60, what="two enriched events")
        assert sorted((e["workspace_id"], e["event_name"]) for e in out.events) == [
            (PA, "JoinedA"),
            (PB, "JoinedB"),
        ]
        assert {p["workspace_id"] for p in out.profiles} == {PA, PB}  # nothing on the portfolio itself
    except AssertionError:
        print(worker.tail())
        raise
    finally:
        out.consumer.close()
        code = worker.terminate()
    assert code == 0


def test_every_data_route_with_project_code_writes_the_projects_workspace(pgw, read_topic) -> None:
    calls = [
        (
            f"/v1/transition?app_id={PORT}&project_code=A",
            {"type": "transition", "elements": [{"type": "customer", "customer_id": "t1"}]},
        ),
        (f"/v1/customer/{PORT}?project_code=A", {"type": "customer", "customer_id": "c1"}),
        (
            f"/v1/event/{PORT}?project_code=A",
            {"type": "event", "customer_id": "c1", "actions": [{"action": "E"}]},
        ),
        (
            f"/v1/device/{PORT}?project_code=A",
            {"type": "device", "customer_id": "c1", "device_id": "d1", "attributes": {"platform": "ANDROID"}},
        ),
        (
            f"/v1/customer/merge?app_id={PORT}&project_code=A",
            {"merge_data": [{"merged_user": "m1", "retained_user": "c1"}]},
        ),
        (f"/v1/customer/delete?app_id={PORT}&project_code=A", {"customer_id": "gone"}),
        (
            f"/v1/devices/manage?app_id={PORT}&project_code=A",
            {
                "user_identifier_type": "customer_id",
                "user_identifier_value": "c1",
                "action_type": "block",
                "device_identifiers": [{"unique_id": "d1"}],
            },
        ),
    ]
    for path, body in calls:
        resp = post(pgw, path, body)
        assert resp.status_code == 200, (path, resp.text)
    records = read_topic(TOPIC, len(calls))
    assert {rec["workspace_id"] for _, rec in records} == {PA}
    assert all(key.startswith(f"{PA}:".encode()) for key, _ in records)


def error_of(resp: Any) -> tuple[int, str, str]:
    error = resp.json()["error"]
    return resp.status_code, error["type"], error["message"]


def test_missing_unknown_and_misplaced_project_codes_are_refused_and_nothing_is_stored(
    pgw, consumer_factory, catalogue_topics
) -> None:
    customer = {"type": "customer", "customer_id": "c1"}
    required = (
        400,
        "ParamsRequired",
        f"project_code is required in query params: workspace {PORT} is a portfolio; pass the code of "
        "one of its projects (A, B).",
    )
    bulk = {"type": "transition", "elements": [customer]}
    for path, body in [
        (f"/v1/transition/{PORT}", bulk),
        (f"/v1/customer/{PORT}", customer),
        (f"/v1/customer/{PORT}?project_code=", customer),  # empty: none given
        (f"/v1/customer/delete?app_id={PORT}", {"customer_id": "c1"}),
        (f"/v1/customers/export?app_id={PORT}", {"data": {"identifiers": []}}),
    ]:
        assert error_of(post(pgw, path, body)) == required, path
    assert error_of(post(pgw, f"/v1/customer/{PORT}?project_code=a", customer)) == (
        400,
        "InvalidParams",
        f"project_code 'a' is not a project of the portfolio workspace {PORT}.",  # case-sensitive
    )
    assert error_of(post(pgw, f"/v1/customer/{PORT}?project_code=Brand%20B", customer))[1] == "InvalidParams"
    assert error_of(post(pgw, f"/v1/customer/{PORT}?project_code=A&project_code=B", customer)) == (
        400,
        "InvalidParams",
        "project_code must be given once.",
    )
    assert error_of(pgw.post(f"/v1/customer/{WS}?project_code=A", customer, auth=(WS, KEY))) == (
        400,
        "InvalidParams",
        f"project_code is accepted only for portfolio workspaces: workspace {WS} has no projects; "
        "call it without project_code.",
    )
    # The credentials are checked first: a wrong key is a 401 whatever the project_code says.
    wrong = pgw.post(f"/v1/customer/{PORT}?project_code=nope", customer, auth=(PORT, "wrong-key"))
    assert wrong.status_code == 401
    # A project's workspace is not reachable with the portfolio's key under its own id.
    assert pgw.post(f"/v1/customer/{PA}", customer, auth=(PA, PORT_KEY)).status_code == 409
    assert consume_until_quiet(consumer_factory([catalogue_topics.topic(TOPIC)]), quiet=1.0) == []


def test_test_connection_checks_the_portfolio_and_names_the_project_when_given(pgw) -> None:
    body = {"app_id": PORT, "app_secret": PORT_KEY, "source": "x", "region": "DC1"}
    plain = pgw.post("/v1/test-connection", body, auth=None)
    assert plain.status_code == 200 and plain.json() == {"status": "success", "app_name": PORT}
    project = pgw.post("/v1/test-connection?project_code=B", body, auth=None)
    assert project.status_code == 200 and project.json()["app_name"] == PB
    assert pgw.post("/v1/test-connection?project_code=C", body, auth=None).status_code == 400


def test_rate_limits_count_on_the_project_and_a_disabled_project_is_suspended(gateway_factory) -> None:
    gw = gateway_factory(seeds=portfolio_seeds(a_users_per_minute=2))
    customer = {"type": "customer", "customer_id": "r1"}
    statuses = [post(gw, f"/v1/customer/{PORT}?project_code=A", customer).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    b = post(gw, f"/v1/customer/{PORT}?project_code=B", customer)
    assert b.status_code == 200 and b.headers["x-ratelimit-limit"] == "10000"  # B's own budget

    directory = gw.gateway.directory
    directory.set_disabled(PB, True)
    wait_for(
        lambda: isinstance(directory.get(PB), Workspace) and directory.get(PB).disabled, 30, what="PB off"
    )
    assert error_of(post(gw, f"/v1/customer/{PORT}?project_code=B", customer)) == (
        403,
        "Account Suspended",
        "Your account is suspended. Please contact MoEngage team.",
    )


def test_a_config_file_whose_project_names_no_workspace_stops_the_gateway_with_the_reason(
    catalogue_topics: KafkaSettings,
) -> None:
    seeds = [
        WorkspaceConfig(id=PORT, api_key=PORT_KEY, projects=[ProjectConfig(code="A", workspace="NOWHERE")])
    ]
    gateway = Gateway(catalogue_topics, GatewaySettings(port=free_port()), seeds)
    try:
        with pytest.raises(WorkspaceError, match="project A's workspace NOWHERE does not exist"):
            gateway.start()
    finally:
        gateway.stop()
