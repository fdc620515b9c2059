"""Schemathesis generates requests from /openapi.json (valid and invalid); none may get a 5xx."""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.bulk_api.conftest import KEY, WS, basic

PATHS = [
    "/v1/transition/{workspace_id}",
    "/v1/transition",
    "/v1/customer/{workspace_id}",
    "/v1/event/{workspace_id}",
    "/v1/device/{workspace_id}",
    "/v1/customers/export",
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("path", PATHS)
def test_no_generated_request_gets_a_server_error(shared_gw, path, mode):
    schema = schemathesis.openapi.from_url(shared_gw.url + "/openapi.json")
    operation = schema[path]["POST"]
    # Fix the workspace so generated bodies reach the validation instead of stopping at a 409.
    fixed = (
        {"path_parameters": {"workspace_id": WS}} if "{workspace_id}" in path else {"query": {"app_id": WS}}
    )
    strategy = operation.as_strategy(mode, headers={"Authorization": basic(WS, KEY)}, **fixed)
    session = requests.Session()

    @given(case=strategy)
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        response = case.call(base_url=shared_gw.url, session=session)
        assert response.status_code < 500, f"{response.status_code} {response.text}\n{case.as_curl_command()}"
        assert response.json()["status"] in ("success", "fail")

    check()
