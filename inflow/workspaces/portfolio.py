"""Portfolio workspaces (MoEngage §3, §4.6): a workspace that lists projects, each a workspace of its own.

A Data API call made with the portfolio's credentials names its project with ``project_code``; an import
row names it in a column mapped to ``moe_project_name``. Either way the data is stored on the project's
workspace (its profiles, identifiers, limits and streams), so everything below the gateway and the
importer sees an ordinary workspace. The rules here keep that mapping unambiguous: codes and names are
unique within a portfolio, a project workspace belongs to one portfolio, and portfolios do not nest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from inflow.workspaces.exceptions import WorkspaceError

MAX_PROJECTS = 100
MAX_CODE_CHARS = 64


@dataclass(frozen=True, slots=True)
class Project:
    """One project of a portfolio: its code (``project_code``), an optional name, and its workspace."""

    code: str
    workspace_id: str
    name: str | None = None

    def labels(self) -> tuple[str, ...]:
        """What an import's ``moe_project_name`` cell may hold to name this project (exact match)."""
        return (self.code,) if not self.name or self.name == self.code else (self.code, self.name)

    def to_record(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name, "workspace_id": self.workspace_id}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Project:
        return cls(code=record["code"], workspace_id=record["workspace_id"], name=record.get("name"))


def find_project(projects: Iterable[Project], code: str) -> Project | None:
    """The project whose code is exactly ``code`` (case-sensitive), or None."""
    return next((p for p in projects if p.code == code), None)


def projects_by_label(projects: Iterable[Project]) -> dict[str, Project]:
    """Code and name of every project -> the project: the lookup of an import's ``moe_project_name``."""
    return {label: p for p in projects for label in p.labels()}


def _check_label(portfolio_id: str, what: str, text: str) -> None:
    if not text or len(text) > MAX_CODE_CHARS or not text.isprintable() or text != text.strip():
        raise WorkspaceError(
            f"portfolio {portfolio_id}: project {what} {text!r} must be 1-{MAX_CODE_CHARS} printable "
            "characters without leading or trailing spaces"
        )


def check_projects(
    portfolio_id: str,
    projects: Sequence[Project],
    exists: Callable[[str], bool],
    projects_of: Callable[[str], Sequence[Project]],
    portfolio_of: Callable[[str], str | None],
) -> None:
    """Refuse a project list that would make routing ambiguous or circular, naming the first fault.

    ``exists(id)``: the workspace exists; ``projects_of(id)``: its projects; ``portfolio_of(id)``: the
    portfolio that lists it as a project, if any (the portfolio being changed excluded)."""
    if len(projects) > MAX_PROJECTS:
        raise WorkspaceError(f"portfolio {portfolio_id}: at most {MAX_PROJECTS} projects")
    if projects and portfolio_of(portfolio_id) is not None:
        raise WorkspaceError(
            f"workspace {portfolio_id} is a project of portfolio {portfolio_of(portfolio_id)}: "
            "portfolios do not nest"
        )
    labels: dict[str, str] = {}
    workspaces: set[str] = set()
    codes: set[str] = set()
    for p in projects:
        _check_label(portfolio_id, "code", p.code)
        if p.name is not None:
            _check_label(portfolio_id, "name", p.name)
        if p.code in codes:
            raise WorkspaceError(f"portfolio {portfolio_id}: project code {p.code} is listed twice")
        codes.add(p.code)
        for label in p.labels():
            other = labels.setdefault(label, p.code)
            if other != p.code:
                raise WorkspaceError(
                    f"portfolio {portfolio_id}: {label!r} names both project {other} and project {p.code}"
                )
        ws = p.workspace_id
        if ws == portfolio_id:
            raise WorkspaceError(f"portfolio {portfolio_id}: project {p.code} cannot be the portfolio itself")
        if ws in workspaces:
            raise WorkspaceError(f"portfolio {portfolio_id}: workspace {ws} is named by two projects")
        workspaces.add(ws)
        if not exists(ws):
            raise WorkspaceError(
                f"portfolio {portfolio_id}: project {p.code}'s workspace {ws} does not exist; create it first"
            )
        if projects_of(ws):
            raise WorkspaceError(
                f"portfolio {portfolio_id}: workspace {ws} is itself a portfolio; portfolios do not nest"
            )
        owner = portfolio_of(ws)
        if owner is not None:
            raise WorkspaceError(
                f"portfolio {portfolio_id}: workspace {ws} is already a project of portfolio {owner}"
            )
