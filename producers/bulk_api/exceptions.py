"""Errors of the Bulk Import API gateway, all under Inflow's root exception."""

from __future__ import annotations

from typing import Any

from inflow.errors import InflowError


class GatewayError(InflowError):
    """Root of the gateway's errors."""


class ApiError(GatewayError):
    """An HTTP error answered with the reference's ``{"status":"fail","error":{...}}`` body."""

    def __init__(self, status: int, type_: str, message: str, attribute: str | None = None) -> None:
        super().__init__(f"{status} {type_}: {message}")
        self.status = status
        self.type = type_
        self.message = message
        self.attribute = attribute

    def error_body(self, request_id: str) -> dict[str, Any]:
        """The ``error`` object of the reference, ``attribute`` only when the error names one."""
        body: dict[str, Any] = {}
        if self.attribute is not None:
            body["attribute"] = self.attribute
        body |= {"message": self.message, "type": self.type, "request_id": request_id}
        return body


class DeliveryError(GatewayError):
    """The broker did not acknowledge every record of a request; the client must retry."""

    retriable = True


class StoreNotReady(GatewayError):
    """A materialized view (workspaces, profiles) has not read its topic to the end yet."""

    retriable = True


class WorkspaceNotFound(GatewayError):
    """No credential is stored for the workspace."""
