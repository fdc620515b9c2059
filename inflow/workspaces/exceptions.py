"""Errors of the workspace registry, under Inflow's root exception.

The CLI prints them (``inflow workspaces ...`` exits 2 with the message); the gateway and the workers only
meet them when they write a workspace (seeding from the config file) and stop with the reason.
"""

from __future__ import annotations

from inflow.errors import InflowError


class WorkspaceError(InflowError):
    """A workspace cannot be read, created or changed; the message says why."""


class WorkspaceNotFound(WorkspaceError):
    """No credential is stored for the workspace."""
