"""Errors of the Streams sink; each is one line under Inflow's root exception."""

from inflow.errors import ConfigError, InflowError


class StreamsError(InflowError):
    """Root of the Streams sink's errors."""


class StreamDefinitionError(ConfigError):
    """A stream definition is invalid (unknown keys, bad URL, bad auth); the message names the field."""


class UnknownStreamError(StreamsError):
    """No stream definition has the given id."""


class DlqError(StreamsError):
    """A dead-letter queue selection or redrive request is invalid."""


class TokenUnavailable(StreamsError):
    """The OAuth token endpoint gave no token; retried like a failed delivery."""

    retriable = True
