"""The OpenAPI 3.0 document served at ``/openapi.json``, built from the gateway's settings.

It describes every Data API route :func:`~inflow.producers.bulk_api.routes.build_app` serves, and only
those; the operations endpoints (``routes.OPERATIONS_PATHS``: health, metrics, this document) are left out.
``tests/bulk_api/test_openapi.py`` compares the document with the app's routes.
"""

from __future__ import annotations

from typing import Any

from inflow.producers.bulk_api.elements import TV_OS_TYPES
from inflow.producers.bulk_api.file_imports import OPENAPI_PATHS
from inflow.producers.bulk_api.management import (
    ACTION_TYPES,
    DEVICE_IDENTIFIER_TYPES,
    MAX_DEVICE_IDENTIFIERS,
    MAX_MERGE_PAIRS,
)
from inflow.producers.bulk_api.settings import GatewaySettings

TIME = {
    "oneOf": [{"type": "number"}, {"type": "string"}],
    "description": "Epoch seconds, epoch milliseconds (by magnitude) or ISO 8601.",
}
ATTRS = {"type": "object", "additionalProperties": True}
PLATFORM = {"type": "string", "enum": ["ANDROID", "iOS", "web", "TV"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _schemas() -> dict[str, Any]:
    return {
        "Platform": {
            "type": "object",
            "required": ["platform"],
            "properties": {"platform": PLATFORM, "active": {"type": "string", "enum": ["true", "false"]}},
        },
        "CustomerElement": {
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"type": "string", "enum": ["customer"]},
                "customer_id": {
                    "type": "string",
                    "description": "Not required when identity resolution is on and "
                    "attributes hold an active identifier.",
                },
                "update_existing_only": {"type": "boolean", "default": False},
                "attributes": {
                    "type": "object",
                    "additionalProperties": True,
                    "properties": {
                        "platforms": {"type": "array", "items": _ref("Platform")},
                        "addValueToArrayField": ATTRS,
                        "removeValueFromArrayField": ATTRS,
                    },
                },
                "user_identifiers": {"type": "object", "additionalProperties": {"type": "string"}},
                "unset_attributes": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["type", "attr"],
                        "properties": {
                            "type": {"type": "string", "enum": ["equals", "prefix", "suffix", "contains"]},
                            "attr": {"type": "string"},
                            "case_sensitive": {"type": "boolean"},
                        },
                    },
                },
            },
        },
        "Action": {
            "type": "object",
            "required": ["action"],
            "properties": {
                "action": {"type": "string", "minLength": 1},
                "attributes": ATTRS,
                "platform": {"type": "string", "enum": ["ANDROID", "iOS", "web", "TV", "unknown"]},
                "moe_os_type": {"type": "string", "enum": list(TV_OS_TYPES)},
                "app_version": {"type": "string"},
                "user_time": TIME,
                "current_time": TIME,
                "user_timezone_offset": {"type": "integer", "minimum": -54000, "maximum": 54000},
            },
        },
        "EventElement": {
            "type": "object",
            "required": ["type", "actions"],
            "properties": {
                "type": {"type": "string", "enum": ["event"]},
                "customer_id": {"type": "string"},
                "user_identifiers": {"type": "object", "additionalProperties": {"type": "string"}},
                "device_id": {"type": "string", "description": "Defaults to the customer_id."},
                "actions": {"type": "array", "minItems": 1, "items": _ref("Action")},
            },
        },
        "DeviceElement": {
            "type": "object",
            "required": ["type", "customer_id", "device_id", "attributes"],
            "properties": {
                "type": {"type": "string", "enum": ["device"]},
                "customer_id": {"type": "string"},
                "device_id": {"type": "string"},
                "attributes": {
                    "type": "object",
                    "required": ["platform"],
                    "additionalProperties": True,
                    "properties": {
                        "platform": PLATFORM,
                        "push_id": {"type": "string"},
                        "model": {"type": "string"},
                        "app_version": {"type": "string"},
                        "os_version": {"type": "string"},
                        "moe_gaid": {"type": "string"},
                        "idfv": {"type": "string"},
                        "moe_push_opted": {"type": "string"},
                    },
                },
            },
        },
        "BulkRequest": {
            "type": "object",
            "required": ["type", "elements"],
            "properties": {
                "type": {"type": "string", "enum": ["transition"]},
                "elements": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "oneOf": [_ref("CustomerElement"), _ref("EventElement"), _ref("DeviceElement")]
                    },
                },
            },
        },
        "Success": {
            "type": "object",
            "required": ["status", "message", "request_id"],
            "properties": {
                "status": {"type": "string", "enum": ["success"]},
                "message": {"type": "string"},
                "request_id": {"type": "string"},
                "accepted_elements": {"type": "integer"},
                "failed_elements": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"index": {"type": "integer"}, "error": _ref("ErrorDetail")},
                    },
                },
            },
        },
        "ErrorDetail": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "attribute": {"type": "string"},
                "message": {"type": "string"},
                "type": {"type": "string"},
                "request_id": {"type": "string"},
            },
        },
        "Failure": {
            "type": "object",
            "required": ["status", "error"],
            "properties": {"status": {"type": "string", "enum": ["fail"]}, "error": _ref("ErrorDetail")},
        },
        "ExportRequest": {
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {
                    "type": "object",
                    "required": ["identifiers"],
                    "properties": {
                        "identifiers": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 20,
                            "items": {
                                "type": "object",
                                "required": ["identifier_type", "identifier"],
                                "properties": {
                                    "identifier_type": {
                                        "type": "string",
                                        "description": "customer_id, moengage_id or an "
                                        "identity-resolution identifier name",
                                    },
                                    "identifier": {"type": "string"},
                                },
                            },
                        },
                        "user_fields_to_export": {"type": "array", "items": {"type": "string"}},
                    },
                }
            },
        },
        "MergeRequest": {
            "type": "object",
            "required": ["merge_data"],
            "properties": {
                "merge_data": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_MERGE_PAIRS,
                    "items": {
                        "type": "object",
                        "required": ["merged_user", "retained_user"],
                        "properties": {
                            "merged_user": {"type": "string", "description": "customer_id merged away"},
                            "retained_user": {"type": "string", "description": "customer_id kept"},
                        },
                    },
                }
            },
        },
        "DeleteRequest": {
            "type": "object",
            "required": ["customer_id"],
            "properties": {"customer_id": {"type": "string", "minLength": 1}},
        },
        "DeviceOptOutRequest": {
            "type": "object",
            "required": [
                "user_identifier_type",
                "user_identifier_value",
                "action_type",
                "device_identifiers",
            ],
            "properties": {
                "user_identifier_type": {
                    "type": "string",
                    "description": "customer_id or another identifier of the workspace",
                },
                "user_identifier_value": {"type": "string", "minLength": 1},
                "action_type": {"type": "string", "enum": list(ACTION_TYPES)},
                "reason": {"type": "string"},
                "client_reference_id": {"type": "string"},
                "device_identifiers": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_DEVICE_IDENTIFIERS,
                    "items": {
                        "type": "object",
                        "minProperties": 1,
                        "additionalProperties": False,
                        "properties": {name: {"type": "string"} for name in DEVICE_IDENTIFIER_TYPES},
                    },
                },
            },
        },
        "TestConnectionRequest": {
            "type": "object",
            "required": ["app_id", "app_secret"],
            "properties": {
                "app_id": {"type": "string", "description": "workspace id"},
                "app_secret": {"type": "string", "description": "data API key"},
                "source": {"type": "string"},
                "region": {"type": "string"},
            },
        },
        "TestConnectionResponse": {
            "type": "object",
            "properties": {"status": {"type": "string"}, "app_name": {"type": "string"}},
        },
        "ExportResponse": {
            "type": "object",
            "properties": {
                "status": {"type": "string"},
                "type": {"type": "string", "enum": ["export_users"]},
                "data": {
                    "type": "object",
                    "properties": {
                        "users_not_found": {"type": "array", "items": {"type": "string"}},
                        "users": {
                            "type": "array",
                            "items": {"type": "object", "properties": {"user_attributes": ATTRS}},
                        },
                    },
                },
            },
        },
    }


def _responses(ok: dict[str, Any]) -> dict[str, Any]:
    fail = {"content": {"application/json": {"schema": _ref("Failure")}}}
    return {
        "200": {
            "description": "Accepted: every record was acknowledged by Kafka.",
            "content": {"application/json": {"schema": ok}},
        },
        **{
            code: {"description": text, **fail}
            for code, text in [
                (
                    "400",
                    "Bad request: malformed JSON, missing header, the first bad element, or a missing or "
                    "unknown project_code",
                ),
                ("401", "Authentication failed"),
                ("403", "Workspace suspended"),
                ("409", "Workspace id in the path differs from the Basic Auth user, or no key is set"),
                ("413", "Body too large, or an element's record over its topic's size limit"),
                ("415", "Content-Type is not application/json"),
                ("429", "Rate limit of the workspace exceeded"),
                ("503", "Kafka did not acknowledge (retry), or a view is still loading"),
            ]
        },
    }


def _params(in_path: bool) -> list[dict[str, Any]]:
    where = (
        {"name": "workspace_id", "in": "path", "required": True}
        if in_path
        else {"name": "app_id", "in": "query", "required": True}
    )
    return [
        where | {"schema": {"type": "string"}},
        {
            "name": "project_code",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "minLength": 1},
            "description": "Portfolio workspaces: the code of the project whose workspace the call works on "
            "(required for a portfolio, 400 ParamsRequired without it; 400 InvalidParams for a code that is "
            "not one of its projects, or on a workspace that is not a portfolio).",
        },
        {
            "name": "X-Forwarded-For",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "Client address; the left-most one is recorded on every record.",
        },
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "Makes event_uuids repeatable so a retried request is de-duplicated downstream.",
        },
    ]


def _operation(
    summary: str, body: dict[str, Any], in_path: bool, ok: dict[str, Any], desc: str = ""
) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "description": desc,
            "parameters": _params(in_path),
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": _responses(ok),
        }
    }


def _test_connection() -> dict[str, Any]:
    """Credentials travel in the body (app_id, app_secret), not in a Basic Auth header."""
    operation = _operation(
        "Test connection",
        _ref("TestConnectionRequest"),
        False,
        _ref("TestConnectionResponse"),
        "Checks a workspace id and data API key; answers the workspace as app_name.",
    )["post"]
    operation["parameters"] = [p for p in operation["parameters"] if p["name"] != "app_id"]
    operation["security"] = []
    return {"post": operation}


def openapi_document(settings: GatewaySettings) -> dict[str, Any]:
    """Paths, schemas and the documented policies (caps, partial acceptance) of this gateway."""
    accept_good = (
        "Bad elements: every element is validated first; the good ones are accepted and the answer "
        "lists each bad one under failed_elements with its index and error. Only when no element is "
        "good does the request fail (400) with the first error."
    )
    reject = (
        "Bad elements: any bad element rejects the whole request (400) with its error; nothing is stored."
    )
    policy = accept_good if settings.bad_elements == "accept_good" else reject
    bulk_desc = (
        f"Body cap {settings.bulk_max_bytes} bytes (413 beyond). {policy} The 200 answer is sent only "
        "after Kafka acknowledged every record; otherwise 503 and the client retries."
    )
    single_cap = f"Body cap {settings.single_max_bytes} bytes."
    success = _ref("Success")
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Inflow Data API (MoEngage-compatible)",
            "version": "1.0.0",
            "description": "Bulk Import, Track User / Event / Device and Get User into Kafka. " + policy,
        },
        "servers": [{"url": "/"}],
        "security": [{"basicAuth": []}],
        "components": {
            "securitySchemes": {
                "basicAuth": {"type": "http", "scheme": "basic", "description": "workspace id : data API key"}
            },
            "schemas": _schemas(),
        },
        "paths": {
            "/v1/transition/{workspace_id}": _operation(
                "Bulk Import", _ref("BulkRequest"), True, success, bulk_desc
            ),
            "/v1/transition": _operation(
                "Bulk Import (app_id in query)", _ref("BulkRequest"), False, success, bulk_desc
            ),
            "/v1/customer/{workspace_id}": _operation(
                "Track User", _ref("CustomerElement"), True, success, single_cap
            ),
            "/v1/event/{workspace_id}": _operation(
                "Track Event", _ref("EventElement"), True, success, single_cap
            ),
            "/v1/device/{workspace_id}": _operation(
                "Track Device", _ref("DeviceElement"), True, success, single_cap
            ),
            "/v1/customer/merge": _operation(
                "Merge User",
                _ref("MergeRequest"),
                False,
                success,
                "One merge request per pair, applied by the processors (MOE_USER_MERGE_EVENT to the "
                "merged user, MOE_USER_MERGED to the retained one). Refused (400 MergeNotAllowed) while "
                f"identity resolution is on. {single_cap}",
            ),
            "/v1/customer/delete": _operation(
                "Delete User",
                _ref("DeleteRequest"),
                False,
                success,
                "Erasure of one user: its profile is removed, its identifiers freed and its devices "
                f"removed by the processors; the request_id is the audit reference. {single_cap}",
            ),
            "/v1/devices/manage": _operation(
                "Device opt-out", _ref("DeviceOptOutRequest"), False, success, single_cap
            ),
            "/v1/test-connection": _test_connection(),
            "/v1/customers/export": _operation(
                "Get User",
                _ref("ExportRequest"),
                False,
                _ref("ExportResponse"),
                "Answered from the profile store; 503 until it is caught up.",
            ),
        }
        | OPENAPI_PATHS,  # the File Imports API and the aux lookup (file_imports.py)
    }
