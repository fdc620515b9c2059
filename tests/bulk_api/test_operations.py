"""/openapi.json, /health and /metrics."""

from __future__ import annotations

import requests

from tests.bulk_api.conftest import WS


def test_openapi_document_describes_every_endpoint_and_the_policy(shared_gw):
    doc = requests.get(shared_gw.url + "/openapi.json", timeout=30).json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        "/v1/transition/{workspace_id}",
        "/v1/transition",
        "/v1/customer/{workspace_id}",
        "/v1/customer/merge",
        "/v1/customer/delete",
        "/v1/event/{workspace_id}",
        "/v1/device/{workspace_id}",
        "/v1/devices/manage",
        "/v1/test-connection",
        "/v1/customers/export",
        "/v1.0/data/fileimports/trigger/{schedule_id}",
        "/v1.0/data/fileimports/import/status",
        "/v1.0/data/fileimports/import/run/history",
        "/v1/aux/{workspace_id}/{key}",
    }
    assert "failed_elements" in doc["info"]["description"]
    assert "102400 bytes" in doc["paths"]["/v1/transition/{workspace_id}"]["post"]["description"]


def test_health_reports_the_views(shared_gw):
    body = requests.get(shared_gw.url + "/health", timeout=30).json()
    assert body["status"] == "ok"
    assert body["views"] == {"workspaces": True, "rate_limits": True, "profiles": True}


def test_metrics_count_requests_records_and_rejections(shared_gw):
    shared_gw.post(f"/v1/event/{WS}", {"type": "event", "customer_id": "m1", "actions": [{"action": "a"}]})
    shared_gw.post(f"/v1/event/{WS}", {"type": "event", "customer_id": "m1", "actions": []})
    text = requests.get(shared_gw.url + "/metrics", timeout=30).text
    assert 'inflow_gateway_requests_total{endpoint="event",status="200"}' in text
    assert 'inflow_gateway_requests_total{endpoint="event",status="400"}' in text
    assert f'inflow_gateway_records_total{{topic="ingest.records",workspace="{WS}"}}' in text
    assert f'inflow_gateway_rejected_elements_total{{type="MissingAttributeError",workspace="{WS}"}}' in text
    assert 'inflow_gateway_view_ready{view="profiles"} 1.0' in text
