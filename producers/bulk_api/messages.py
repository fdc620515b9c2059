"""MoEngage's error texts: the Bulk Import API's, and those of the single-record APIs (Track User, Track
Event, Track Device, Get User), which word the same faults differently.

MoEngage's Bulk Import texts start with an apostrophe (``'customer_id not found in the payload``); it is
kept verbatim so clients matching on the text keep working.
"""

from __future__ import annotations

from dataclasses import dataclass

from inflow.producers.bulk_api.exceptions import ApiError

MISSING = "MissingAttributeError"


@dataclass(frozen=True, slots=True)
class Texts:
    """Message texts of one API family."""

    customer_id_missing: str
    customer_id_empty: str
    actions_missing: str
    actions_empty: str
    action_missing: str
    action_empty: str
    malformed_json: str
    bulk: bool

    def not_found(self, attribute: str) -> str:
        """``'device_id not found in the payload`` (Bulk) or ``device_id is not found in the payload``."""
        return (
            f"'{attribute} not found in the payload"
            if self.bulk
            else f"{attribute} is not found in the payload"
        )


BULK = Texts(
    customer_id_missing="'customer_id not found in the payload",
    customer_id_empty="'customer_id cannot be empty Unicode string",
    actions_missing="'actions not found in the payload",
    actions_empty="'actions cannot be empty array",
    action_missing="'action not found in the payload",
    action_empty="'action cannot be empty Unicode string",
    malformed_json="'Could not decode the request body. The JSON was incorrect or not encoded as UTF-8.",
    bulk=True,
)
SINGLE = Texts(
    customer_id_missing="customer_id is not found in the payload",
    customer_id_empty="customer_id can not be empty Unicode String",
    actions_missing="actions is not found in the payload",
    actions_empty="actions can not be empty Array",
    action_missing="action is not found in the payload",
    action_empty="action can not be empty Unicode String",
    malformed_json="Could not decode the request body. The JSON was incorrect or not encoded as UTF-8.",
    bulk=False,
)


def missing(attribute: str, message: str) -> ApiError:
    return ApiError(400, MISSING, message, attribute)


def wrong_type(attribute: str, datatype: str) -> ApiError:
    """MoEngage's type error: "key is expected to be datatype"."""
    return ApiError(400, "TypeError", f"{attribute} is expected to be {datatype}", attribute)


def invalid(attribute: str, message: str, type_: str = "AttributeError") -> ApiError:
    return ApiError(400, type_, message, attribute)


# Whole-request errors MoEngage answers for every Data API.
def content_type_missing() -> ApiError:
    return ApiError(400, "Missing header value", "The Content-Type Header is required")


def unsupported_media_type() -> ApiError:
    return ApiError(415, "Unsupported Media Type", "Unsupported Media Type")


def empty_body() -> ApiError:
    return ApiError(400, "Empty request body", "A valid JSON document is required")


def not_an_object() -> ApiError:
    return ApiError(400, "Body type is not JSON", "A valid JSON document is required.")


def malformed_json(texts: Texts) -> ApiError:
    return ApiError(400, "Malformed JSON", texts.malformed_json)


def payload_too_large(limit_bytes: int) -> ApiError:
    return ApiError(413, "Payload too large", f"The payload can not exceed {limit_bytes // 1024}KB")


def record_too_large(reason: str) -> ApiError:
    """An element whose record is over its topic's size limit: the same data can never be stored."""
    return ApiError(413, "Payload too large", f"The element is too large to store: {reason}")


def app_id_required() -> ApiError:
    return ApiError(400, "ParamsRequired", "app_id is required in path/query params.")


def rate_limited() -> ApiError:
    return ApiError(429, "Rate Limit Exceeded", "Rate Limits for User / Event exceeded")


def export_rate_limited() -> ApiError:
    return ApiError(429, "Rate Limit Exceeded", "Rate limit exceeded")


def server_unavailable(detail: str) -> ApiError:
    """MoEngage's guidance for 5xx answers: retry every 2 seconds, at most 5 times."""
    return ApiError(
        503,
        "Server Error",
        f"{detail} We recommend that you retry every 2 seconds for a maximum of 5 times in such cases.",
    )


def merge_refused(identifiers: tuple[str, ...]) -> ApiError:
    """Reference §2.8: the Merge User API is disabled while identity resolution is on."""
    return ApiError(
        400,
        "MergeNotAllowed",
        "Merge User is disabled while Identity Resolution is enabled for this workspace (identifiers: "
        f"{', '.join(identifiers)}); users that share an identifier value are merged automatically.",
    )


def account_suspended() -> ApiError:
    return ApiError(403, "Account Suspended", "Your account is suspended. Please contact MoEngage team.")


# Portfolio workspaces (reference §3): calls made with a portfolio's credentials name their project.
def project_code_required(portfolio_id: str, codes: list[str]) -> ApiError:
    return ApiError(
        400,
        "ParamsRequired",
        f"project_code is required in query params: workspace {portfolio_id} is a portfolio; pass the "
        f"code of one of its projects ({', '.join(codes)}).",
    )


def project_code_unknown(code: str, portfolio_id: str) -> ApiError:
    return ApiError(
        400,
        "InvalidParams",
        f"project_code {code!r} is not a project of the portfolio workspace {portfolio_id}.",
    )


def project_code_repeated() -> ApiError:
    return ApiError(400, "InvalidParams", "project_code must be given once.")


def not_a_portfolio(workspace_id: str) -> ApiError:
    return ApiError(
        400,
        "InvalidParams",
        f"project_code is accepted only for portfolio workspaces: workspace {workspace_id} has no projects; "
        "call it without project_code.",
    )


def project_workspace_missing(code: str, workspace_id: str) -> ApiError:
    return ApiError(
        400,
        "InvalidParams",
        f"project_code {code!r} maps to workspace {workspace_id}, which does not exist.",
    )
