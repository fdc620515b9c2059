"""Per-workspace identity settings, from the YAML file's ``workspaces`` section.

A workspace missing from the file gets the reference default: only ``customer_id`` (the ID identifier)
is active and the retained profile of a merge is the one seen last.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from config.file import WorkspaceConfig

CUSTOMER_ID = "customer_id"
ANONYMOUS_ID = "anonymous_id"


@dataclass(frozen=True, slots=True)
class IdentityRules:
    """Active identifiers in priority order (customer_id first, then configured order, anonymous id last)."""

    identifiers: tuple[str, ...] = (CUSTOMER_ID,)
    merge_priority_attribute: str | None = None
    exceptions: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def is_exception(self, name: str, value: str) -> bool:
        """A value on the identifier's exception list never identifies a user (it stays an attribute)."""
        excluded = self.exceptions.get(name)
        return excluded is not None and value in excluded

    @property
    def order(self) -> tuple[str, ...]:
        """Every identifier a record may carry, the record's own one first."""
        return self.identifiers + (ANONYMOUS_ID,)


def rules_from_config(config: WorkspaceConfig) -> IdentityRules:
    """``ID`` is always active (reference 2.8), whatever the file lists, and always first."""
    others = [name for name in dict.fromkeys(config.identifiers) if name not in (CUSTOMER_ID, ANONYMOUS_ID)]
    exceptions = {name: frozenset(values) for name, values in config.identifier_exceptions.items()}
    return IdentityRules((CUSTOMER_ID, *others), config.merge_priority_attribute, exceptions)


class WorkspaceDirectory:
    """Identity rules by workspace id; unknown workspaces use the defaults."""

    def __init__(self, workspaces: Iterable[WorkspaceConfig] = ()) -> None:
        self._rules = {ws.id: rules_from_config(ws) for ws in workspaces}
        self._default = IdentityRules()

    def rules(self, workspace_id: str) -> IdentityRules:
        return self._rules.get(workspace_id, self._default)
