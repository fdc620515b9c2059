"""Portfolio routing of the Data APIs (reference §3): a call authenticated with a portfolio workspace's
credentials names its project with ``?project_code=``, and from then on it is a call of the project's
workspace (records, identifiers, rate limits, Get User), so no later step knows about portfolios.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from inflow.producers.bulk_api.messages import (
    account_suspended,
    not_a_portfolio,
    project_code_repeated,
    project_code_required,
    project_code_unknown,
    project_workspace_missing,
)
from inflow.workspaces.registry import Workspace

PARAM = "project_code"


def target_workspace(
    authenticated: Workspace,
    codes: Sequence[str],
    lookup: Callable[[str], Workspace | None],
    required: bool = True,
) -> Workspace:
    """The workspace a call works on: ``authenticated`` itself, or the project ``codes`` names.

    ``codes`` are the call's ``project_code`` values (an empty one counts as none). A portfolio needs
    exactly one code of its projects unless ``required`` is False (Test connection checks credentials
    only); any code on an ordinary workspace is refused, so data never lands where the caller did not mean.
    """
    given = [c for c in codes if c]
    if len(given) > 1:
        raise project_code_repeated()
    if not given:
        if authenticated.is_portfolio and required:
            raise project_code_required(authenticated.id, [p.code for p in authenticated.projects])
        return authenticated
    code = given[0]
    if not authenticated.is_portfolio:
        raise not_a_portfolio(authenticated.id)
    project = authenticated.project(code)
    if project is None:
        raise project_code_unknown(code, authenticated.id)
    workspace = lookup(project.workspace_id)
    if workspace is None:
        raise project_workspace_missing(code, project.workspace_id)
    if workspace.disabled:
        raise account_suspended()
    return workspace
