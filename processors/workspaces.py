"""Per-workspace identity settings: identifiers from ``control.workspaces`` (the workspace settings the
gateway and ``inflow workspaces`` keep) or the YAML file's ``workspaces`` section, exception lists and the
merge priority attribute from the file.

A workspace known to neither gets MoEngage's default: only ``customer_id`` (the ID identifier) is
active and the retained profile of a merge is the one seen last.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from inflow.config.file import WorkspaceConfig

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


def rules_from_config(
    config: WorkspaceConfig | None, identifiers: Iterable[str] | None = None
) -> IdentityRules:
    """``ID`` is always active (as in MoEngage), whatever is listed, and always first. ``identifiers`` (from
    ``control.workspaces``) win over the file's list; the priority attribute and exceptions are the file's."""
    listed = identifiers if identifiers is not None else (config.identifiers if config else ())
    others = [name for name in dict.fromkeys(listed) if name not in (CUSTOMER_ID, ANONYMOUS_ID)]
    if config is None:
        return IdentityRules((CUSTOMER_ID, *others))
    exceptions = {name: frozenset(values) for name, values in config.identifier_exceptions.items()}
    return IdentityRules((CUSTOMER_ID, *others), config.merge_priority_attribute, exceptions)


IdentifiersOf = Callable[[str], tuple[str, ...] | None]


class IdentityRulesDirectory:
    """Identity rules by workspace id; unknown workspaces use the defaults.

    ``identifiers_of`` gives a workspace's identifiers as ``control.workspaces`` holds them (set by
    ``inflow workspaces create --identifiers`` or seeded from the file by the gateway), or None when the
    topic does not know the workspace; a change there applies from the next record on.
    """

    def __init__(
        self, workspaces: Iterable[WorkspaceConfig] = (), identifiers_of: IdentifiersOf | None = None
    ) -> None:
        self._configs = {ws.id: ws for ws in workspaces}
        self._identifiers_of = identifiers_of
        self._rules: dict[str, tuple[tuple[str, ...] | None, IdentityRules]] = {}

    def rules(self, workspace_id: str) -> IdentityRules:
        listed = self._identifiers_of(workspace_id) if self._identifiers_of else None
        known = self._rules.get(workspace_id)
        if known is not None and known[0] == listed:
            return known[1]
        rules = rules_from_config(self._configs.get(workspace_id), listed)
        self._rules[workspace_id] = (listed, rules)
        return rules
