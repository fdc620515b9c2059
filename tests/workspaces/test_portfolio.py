"""The rules of a portfolio's project list (pure), and old workspace records read with no projects."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from fastavro import schemaless_writer

from inflow.schemas.catalog import load_catalog
from inflow.schemas.serde import AvroSerde
from inflow.workspaces.exceptions import WorkspaceError
from inflow.workspaces.portfolio import Project, check_projects, find_project, projects_by_label
from inflow.workspaces.registry import Workspace

EXISTING = {"P", "A", "B", "OTHER", "NESTED", "TAKEN"}
PROJECTS_OF = {"NESTED": (Project("X", "OTHER"),)}
OWNER = {"TAKEN": "ELSEWHERE"}


def check(projects: list[Project], portfolio: str = "P") -> None:
    check_projects(
        portfolio,
        projects,
        lambda ws: ws in EXISTING,
        lambda ws: PROJECTS_OF.get(ws, ()),
        lambda ws: OWNER.get(ws),
    )


def test_a_valid_project_list_passes_and_is_looked_up_exactly() -> None:
    projects = [Project("A", "A", "Alpha"), Project("B", "B")]
    check(projects)
    assert find_project(projects, "A") == projects[0]
    assert find_project(projects, "a") is None  # case-sensitive
    assert projects_by_label(projects) == {"A": projects[0], "Alpha": projects[0], "B": projects[1]}


@pytest.mark.parametrize(
    ("projects", "reason"),
    [
        ([Project("A", "A"), Project("A", "B")], "project code A is listed twice"),
        ([Project("A", "A", "Beta"), Project("Beta", "B")], "'Beta' names both project A and project Beta"),
        ([Project("A", "P")], "project A cannot be the portfolio itself"),
        ([Project("A", "A"), Project("B", "A")], "workspace A is named by two projects"),
        ([Project("A", "MISSING")], "project A's workspace MISSING does not exist; create it first"),
        ([Project("A", "NESTED")], "workspace NESTED is itself a portfolio; portfolios do not nest"),
        ([Project("A", "TAKEN")], "workspace TAKEN is already a project of portfolio ELSEWHERE"),
        ([Project(" A", "A")], "project code ' A' must be 1-64 printable characters"),
        ([Project("A", "A", "")], "project name '' must be 1-64 printable characters"),
        ([Project("x" * 65, "A")], "must be 1-64 printable characters"),
    ],
)
def test_a_project_list_that_would_make_routing_ambiguous_is_refused_with_the_reason(
    projects: list[Project], reason: str
) -> None:
    with pytest.raises(WorkspaceError, match="^portfolio P: ") as exc:
        check(projects)
    assert reason in str(exc.value)


def test_a_project_cannot_become_a_portfolio() -> None:
    with pytest.raises(WorkspaceError, match="workspace TAKEN is a project of portfolio ELSEWHERE"):
        check([Project("A", "A")], portfolio="TAKEN")
    check([], portfolio="TAKEN")  # no projects: nothing to refuse


def test_too_many_projects_are_refused() -> None:
    with pytest.raises(WorkspaceError, match="at most 100 projects"):
        check([Project(f"C{i}", f"W{i}") for i in range(101)])


def test_a_credential_written_before_portfolios_reads_as_an_ordinary_workspace() -> None:
    serde = AvroSerde()
    old = {
        "workspace_id": "OLD",
        "key_hash": "scrypt$x",
        "key_version": 1,
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "rotated_at": None,
        "disabled": False,
        "identifiers": [],
        "users_per_minute": 5,
        "events_per_minute": 6,
    }
    v1 = next(e for e in load_catalog().history if (e.name, e.version) == ("WorkspaceCredential", 1))
    body = io.BytesIO()
    schemaless_writer(body, v1.parsed, old)  # what gateways wrote before portfolios
    data = v1.header + body.getvalue()
    name, record = serde.decode(data, expected="WorkspaceCredential")
    workspace = Workspace.from_record(record)
    assert (name, workspace.projects, workspace.is_portfolio) == ("WorkspaceCredential", (), False)
    portfolio = Workspace("P", "h", projects=(Project("A", "A", "Alpha"),))
    again = Workspace.from_record(serde.decode(serde.encode("WorkspaceCredential", portfolio.to_record()))[1])
    assert again.projects == portfolio.projects and again.project("A") == Project("A", "A", "Alpha")
