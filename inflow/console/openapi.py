"""The OpenAPI 3.1 document of the admin API, built from the one route table (``api.ROUTES``)."""

from __future__ import annotations

import re
from typing import Any

from inflow.console.api import ROUTES

ERROR = {
    "description": "The reason, as {error: {status, reason}}",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def operation(route: Any) -> dict[str, Any]:
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", route.path)
    ]
    ok = "201" if route.path in ("/api/streams", "/api/tokens") and route.method == "POST" else "200"
    if route.path.endswith("/run"):
        ok = "202"
    op: dict[str, Any] = {
        "operationId": route.handler.__name__,
        "summary": route.summary,
        "tags": [route.tag],
        "description": f"Role: {route.role}."
        + (f" Recorded in the audit log as `{route.action}`." if route.action else ""),
        "parameters": params,
        "responses": {
            ok: {"description": "OK", "content": {route.produces: {"schema": {"type": "object"}}}},
            "400": ERROR,
            "401": ERROR,
            "403": ERROR,
            "404": ERROR,
            "503": ERROR,
        },
    }
    if route.body is not None:
        op["requestBody"] = {
            "required": False,
            "description": route.body,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    return op


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Inflow admin API",
            "version": "1",
            "description": "Workspaces, imports, streams, topics and health of one Inflow installation. "
            "Authenticate with `Authorization: Bearer <admin token>` (`inflow console token create`); the "
            "read role may call every GET, changes need the admin role and are written to the audit log.",
        },
        "servers": [{"url": "/"}],
        "security": [{"adminToken": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {"status": {"type": "integer"}, "reason": {"type": "string"}},
                        }
                    },
                }
            },
        },
    }
