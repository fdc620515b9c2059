"""MoEngage identity rules shared by the gateway and the processors: the customer_id values MoEngage
blocks (placeholders such as "null" or "unknown" that would merge unrelated users) and the attribute names
it reserves."""

from __future__ import annotations

# customer_id values that never identify a user; compared case-insensitively after trimming.
BLOCKED_CUSTOMER_IDS: tuple[str, ...] = (
    "unknown", "guest", "null", "0", "1", "true", "false", "user_attribute_unique_id", "(empty)", "na",
    "n/a", "", "dummy_seller_code", "user_id", "id", "customer_id", "uid", "userid", "none", "-2", "-1", "2",
)  # fmt: skip

# Attribute names a user profile never accepts.
BLOCKED_ATTRIBUTE_NAMES = frozenset({"id", "_id", ""})

# Identifier names also found under the stored standard attribute key (email is u_em, mobile u_mb).
IDENTIFIER_ALIASES = {"email": "u_em", "mobile": "u_mb", "u_em": "email", "u_mb": "mobile"}


def identifier_named(attribute: str, identifiers: tuple[str, ...] | list[str]) -> str | None:
    """The identifier of ``identifiers`` that an attribute (or column mapped to it) carries: the same name,
    or its standard-attribute alias (``u_em`` carries ``email``); None when it carries none of them."""
    for name in identifiers:
        if attribute == name or IDENTIFIER_ALIASES.get(attribute) == name:
            return name
    return None
