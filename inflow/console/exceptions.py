"""Errors of the console, under Inflow's root exception; the API answers them with their status."""

from __future__ import annotations

from inflow.errors import InflowError


class ConsoleError(InflowError):
    """A console request cannot be served; ``status`` is the HTTP status it is answered with."""

    status = 400


class BadRequest(ConsoleError):
    status = 400


class Unauthorized(ConsoleError):
    status = 401


class Forbidden(ConsoleError):
    status = 403


class NotFound(ConsoleError):
    status = 404


class TokenError(ConsoleError):
    """An admin token cannot be created, read or revoked."""
