"""The OpenAPI document served at /openapi.json describes exactly the Data API routes the app serves."""

from __future__ import annotations

import re

import requests

from inflow.producers.bulk_api.routes import OPERATIONS_PATHS, build_app

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def served_routes(app) -> set[tuple[str, str]]:
    """(method, path template) of every route; aiohttp's automatic HEAD of a GET route is the GET's."""
    routes = {(route.method.lower(), route.resource.canonical) for route in app.router.routes()}
    return {(m, p) for m, p in routes if not (m == "head" and ("get", p) in routes)}


def test_every_data_api_route_is_documented_and_every_documented_one_served(shared_gw):
    document = requests.get(shared_gw.url + "/openapi.json", timeout=30).json()
    documented = {
        (method, path) for path, item in document["paths"].items() for method in item if method in METHODS
    }
    served = served_routes(build_app(shared_gw.gateway))
    assert OPERATIONS_PATHS <= {path for _, path in served}, "an operations path the app no longer serves"
    data_api = {(method, path) for method, path in served if path not in OPERATIONS_PATHS}
    assert data_api - documented == set(), "served but not in the OpenAPI document"
    assert documented - data_api == set(), "in the OpenAPI document but not served"
    # Each path parameter of a route is declared as one, and no other.
    for path, item in document["paths"].items():
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path)), (method, path)
