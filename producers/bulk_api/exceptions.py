"""Errors of the Bulk Import API gateway, all under Inflow's root exception.

Workspace errors (:class:`~inflow.workspaces.exceptions.WorkspaceNotFound` and its base) belong to the
workspace registry below the gateway; the gateway answers from the registry's contents and never turns them
into HTTP answers.
"""

from __future__ import annotations

from typing import Any

from inflow.errors import InflowError


class GatewayError(InflowError):
    """Root of the gateway's errors."""


class ApiError(GatewayError):
    """An HTTP error answered with MoEngage's ``{"status":"fail","error":{...}}`` body."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        attribute: str | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {type_}: {message}")
        self.status = status
        self.type = type_
        self.message = message
        self.attribute = attribute
        self.headers = headers or {}

    def error_body(self, request_id: str) -> dict[str, Any]:
        """MoEngage's ``error`` object: ``attribute`` (only when the error names one), message, type and
        the request id."""
        body: dict[str, Any] = {}
        if self.attribute is not None:
            body["attribute"] = self.attribute
        body |= {"message": self.message, "type": self.type, "request_id": request_id}
        return body


class DeliveryError(GatewayError):
    """The records of a request were not all stored; ``retriable`` says whether the client may retry."""

    retriable = True


class RecordRejected(DeliveryError):
    """A record of the request is over its topic's size limit: sending it again cannot succeed.

    Refused before anything of the request was sent, unless the broker refused it itself (a topic's
    limit lowered while the gateway runs); ``reason`` says which record and which limit."""

    retriable = False

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class StoreNotReady(GatewayError):
    """A materialized view (workspaces, profiles) has not read its topic to the end yet."""

    retriable = True
