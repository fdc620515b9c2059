"""The one place a stream's destination is chosen: by the scheme of the definition's ``url``.

A new kind of destination is a class with ``deliver`` / ``close`` / ``safe_name``
(:class:`~inflow.sinks.streams.destinations.base.Destination`) added to :data:`DESTINATIONS` under its scheme.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from inflow.config.secrets import SecretBox
from inflow.sinks.streams.definitions import StreamDefinition
from inflow.sinks.streams.destinations.base import Destination
from inflow.sinks.streams.destinations.http import HttpDestination
from inflow.sinks.streams.exceptions import StreamDefinitionError
from inflow.sinks.streams.settings import SinkSettings

Factory = Callable[[StreamDefinition, SecretBox | None, SinkSettings | None], Destination]

DESTINATIONS: dict[str, Factory] = {
    "http": HttpDestination,
    "https": HttpDestination,
}


def open_destination(
    definition: StreamDefinition, box: SecretBox | None, settings: SinkSettings | None = None
) -> Destination:
    """The destination serving ``definition``; an unknown scheme is an error naming the known ones.

    Raises :class:`StreamDefinitionError` when the stream cannot be served as defined (secrets that do not
    decrypt, a refused header or address): the sink holds that stream with the reason."""
    url = definition.url
    if SecretBox.is_encrypted(url):
        url = definition.revealed(box).url
    scheme = urlsplit(url).scheme.lower()
    factory = DESTINATIONS.get(scheme)
    if factory is None:
        known = ", ".join(sorted(DESTINATIONS))
        raise StreamDefinitionError(
            f"stream {definition.id}: no destination for {scheme!r} URLs (known: {known})"
        )
    return factory(definition, box, settings)
