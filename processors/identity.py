"""MoEngage's identity resolution rules as pure functions: which identifiers a record carries, which are
blocked, and which profile a merge retains.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from inflow.config.identifiers import BLOCKED_CUSTOMER_IDS as BLOCKED_IDS
from inflow.config.identifiers import IDENTIFIER_ALIASES
from inflow.processors.exceptions import Rejection
from inflow.processors.workspaces import ANONYMOUS_ID, CUSTOMER_ID, IdentityRules

BLOCKED_CUSTOMER_IDS = frozenset(BLOCKED_IDS)

# MoEngage merges only the first 50 users that share one identifier value.
MAX_USERS_PER_IDENTIFIER_VALUE = 50


def identifier_keys(names: Iterable[str]) -> set[str]:
    """The attribute keys that carry these identifiers (each name and its standard-attribute alias)."""
    found = set()
    for name in names:
        found.add(name)
        alias = IDENTIFIER_ALIASES.get(name)
        if alias is not None:
            found.add(alias)
    return found


def as_identifier(value: Any) -> str | None:
    """Identifiers are strings (others converted); null and blank values are excluded."""
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    return text if text.strip() else None


def is_blocked_customer_id(value: str) -> bool:
    return value.strip().casefold() in BLOCKED_CUSTOMER_IDS


def record_identifiers(
    rules: IdentityRules,
    customer_id: Any,
    anonymous_id: Any,
    user_identifiers: Mapping[str, Any],
    attributes: Mapping[str, Any] | None = None,
) -> list[tuple[str, str]]:
    """The record's active identifiers in priority order, as (name, value).

    Only identifiers active in the workspace count; other keys stay plain attributes, and so do values on
    an identifier's exception list. A blocked ``customer_id`` rejects the record; a record with no
    identifier at all is rejected too.
    """
    found: list[tuple[str, str]] = []
    cid = as_identifier(customer_id)
    if cid is not None:
        if is_blocked_customer_id(cid):
            raise Rejection(f"customer_id {cid!r} is a blocked value and cannot identify a user")
        found.append((CUSTOMER_ID, cid))
    for name in rules.identifiers[1:]:
        value = _lookup(name, user_identifiers, attributes)
        if value is not None:
            found.append((name, value))
    anon = as_identifier(anonymous_id)
    if anon is not None:
        found.append((ANONYMOUS_ID, anon))
    found = [(name, value) for name, value in found if not rules.is_exception(name, value)]
    if not found:
        active = ", ".join(rules.order)
        raise Rejection(f"the record carries no active identifier (active in this workspace: {active})")
    return found


def _lookup(name: str, *sources: Mapping[str, Any] | None) -> str | None:
    """An identifier's value from user_identifiers first, then the attributes (also under its alias)."""
    for source in sources:
        if not source:
            continue
        for key in (name, IDENTIFIER_ALIASES.get(name)):
            if key is not None and key in source:
                value = as_identifier(source[key])
                if value is not None:
                    return value
    return None


def choose_retained(profiles: Sequence[dict[str, Any]], priority_attribute: str | None) -> dict[str, Any]:
    """The profile a MoEngage merge retains: the one with the merge priority attribute (when configured),
    else the one seen last.

    Further ties go to the earliest first seen, then the smallest uid, so every replay picks the same one.
    """

    def has_priority(profile: Mapping[str, Any]) -> bool:
        if not priority_attribute:
            return False
        return as_identifier(profile.get("attributes", {}).get(priority_attribute)) is not None

    def rank(profile: Mapping[str, Any]) -> tuple[int, int, int, str]:
        return (
            -int(has_priority(profile)),
            -int(profile["last_seen"]),
            int(profile["first_seen"]),
            str(profile["uid"]),
        )

    return min(profiles, key=rank)


def distinct(values: Iterable[str]) -> list[str]:
    """Values in first-seen order without repeats."""
    return list(dict.fromkeys(values))
