"""Portfolio routing of import rows (reference §4.6): a column mapped to ``moe_project_name`` names the
project each row belongs to, matched exactly (case-sensitive) against the portfolio's project codes and
names; a row with no match or an empty cell stays on the import's own workspace (MoEngage's "global
level").

Each target workspace gets a :class:`~inflow.producers.s3_import.records.RecordBuilder` and a template
encoder of its own, so the per-row code is the same as for an ordinary import: a routed row is an
ordinary row of its project's workspace. Users and events imports are routed; auxiliary data stays on the
import's workspace, where the aux lookup reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from inflow.producers.s3_import.definition import ImportDefinition, ImportType
from inflow.producers.s3_import.exceptions import RowError
from inflow.producers.s3_import.mapping import Role
from inflow.producers.s3_import.records import RecordBuilder
from inflow.workspaces.portfolio import projects_by_label
from inflow.workspaces.registry import Workspace

ROUTED_TYPES = frozenset({ImportType.REGISTERED_USERS, ImportType.ANONYMOUS_USERS, ImportType.EVENTS})
Encoder = Callable[[Any], bytes]


@dataclass(frozen=True, slots=True)
class ProjectRouting:
    """Where the rows of one portfolio's import go: a project label -> its workspace id.

    ``disabled`` holds project workspaces that are suspended: their rows fail with the reason, as a call
    to a suspended workspace is refused, instead of being stored where nobody may read them."""

    global_workspace: str
    by_label: Mapping[str, str] = field(default_factory=dict)
    disabled: frozenset[str] = frozenset()

    def workspace_for(self, label: Any) -> str:
        if not label:
            return self.global_workspace
        workspace = self.by_label.get(label if label.__class__ is str else str(label))
        if workspace is None:
            return self.global_workspace
        if workspace in self.disabled:
            raise RowError(f"moe_project_name {label!r}: the project's workspace {workspace} is disabled")
        return workspace


def routing_for(workspace_id: str, lookup: Callable[[str], Workspace | None]) -> ProjectRouting | None:
    """The routing of an import of ``workspace_id`` when that workspace is a portfolio, else None."""
    portfolio = lookup(workspace_id)
    if portfolio is None or not portfolio.is_portfolio:
        return None
    by_label = {label: p.workspace_id for label, p in projects_by_label(portfolio.projects).items()}
    disabled = frozenset(
        ws for ws in set(by_label.values()) if (found := lookup(ws)) is not None and found.disabled
    )
    return ProjectRouting(workspace_id, by_label, disabled)


class RoutedRecords:
    """``build`` and ``encode`` of a file whose rows go to several workspaces, one builder and one
    encoder per workspace (each made when its first row comes)."""

    def __init__(
        self,
        d: ImportDefinition,
        routing: ProjectRouting,
        builder_for: Callable[[ImportDefinition], RecordBuilder],
        encoder_for: Callable[[RecordBuilder, dict[str, Any]], Encoder],
    ) -> None:
        self.d, self.routing = d, routing
        self._builder_for, self._encoder_for = builder_for, encoder_for
        self._builders: dict[str, RecordBuilder] = {}
        self._encoders: dict[str, Encoder] = {}

    def builder(self, workspace_id: str) -> RecordBuilder:
        builder = self._builders.get(workspace_id)
        if builder is None:
            d = self.d.model_copy(update={"workspace_id": workspace_id})
            builder = self._builders[workspace_id] = self._builder_for(d)
        return builder

    def build(
        self, row: int, attrs: dict[str, Any], roles: dict[Role, Any], ids: dict[str, str]
    ) -> tuple[bytes, dict[str, Any]]:
        workspace = self.routing.workspace_for(roles.get(Role.PROJECT))
        return self.builder(workspace).build(row, attrs, roles, ids)

    def encode(self, record: dict[str, Any]) -> bytes:
        workspace = record["workspace_id"]
        encode = self._encoders.get(workspace)
        if encode is None:
            encode = self._encoders[workspace] = self._encoder_for(self._builders[workspace], record)
        return encode(record)


def routed_records(
    d: ImportDefinition,
    routing: ProjectRouting | None,
    mapped: set[Role],
    builder_for: Callable[[ImportDefinition], RecordBuilder],
    encoder_for: Callable[[RecordBuilder, dict[str, Any]], Encoder],
) -> RoutedRecords | None:
    """Per-row routing when the import's workspace is a portfolio, the type is routed and the file has a
    ``moe_project_name`` column; None: every row is the import's workspace's (the usual path)."""
    if routing is None or d.type not in ROUTED_TYPES or Role.PROJECT not in mapped:
        return None
    return RoutedRecords(d, routing, builder_for, encoder_for)
