"""MoEngage's File Imports API on the gateway (§4.6, §4.8) and the aux lookup, over real HTTP: trigger a
run by schedule id, import details, run history with its status filter and 50-per-page pagination, and
MoEngage's MOE-APPKEY errors. The poller and the gateway meet only through the control topics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import requests

from inflow.config.settings import KafkaSettings
from inflow.local.process import free_port
from inflow.producers.bulk_api.settings import GatewaySettings
from inflow.producers.s3_import.poller import Poller
from tests.bulk_api.conftest import KEY, WS, basic, seed_workspaces, start_in_process
from tests.support import wait_for

BASE = "/v1.0/data/fileimports"


@pytest.fixture
def gateway_url(catalogue_topics: KafkaSettings, tmp_path: Any) -> Iterator[str]:
    port = free_port()
    settings = GatewaySettings(port=port, profile_store_dir=tmp_path / "profiles")
    gateway, shutdown = start_in_process(catalogue_topics, settings, seed_workspaces())
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: all(gateway.views().values()), 60, what="gateway views")
        yield url
    finally:
        shutdown()


def call(
    url: str, path: str, body: Any = None, *, app_key: str | None = WS, password: str = KEY
) -> requests.Response:
    headers = {"Content-Type": "application/json", "Authorization": basic(WS, password)}
    if app_key is not None:
        headers["MOE-APPKEY"] = app_key
    return requests.post(url + path, json=body, headers=headers, timeout=60)


def names(n: int) -> list[str]:
    first = date(2024, 1, 1)
    return [f"registered_user_data_{(first + timedelta(days=i)).strftime('%d%m%Y')}.csv" for i in range(n)]


def test_trigger_details_and_run_history(
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
    gateway_url: str,
) -> None:
    # A one-time import scheduled far ahead: only the API trigger runs it now.
    d = definition(date_format="ddmmyyyy", schedule={"kind": "one_time", "at": "2099-01-01T00:00:00Z"})
    files = names(51)
    for i, name in enumerate(files[:-1]):
        put(f"in/users/{name}", f"ID,First Name\nu{i},N{i}\n")
    put(f"in/users/{files[-1]}", "ID,First Name\n")  # no data row: FAILED
    poller = poller_factory()
    poller.store.put(d)
    assert poller.tick() == []  # not due

    url = gateway_url
    empty = call(url, f"{BASE}/import/run/history", {"import_name": d.name})
    assert empty.status_code == 200
    assert empty.json() == {
        "status": "success",
        "total_count": "0",
        "data": [],
        "offset": 1,
        "more_files": "false",
    }

    # MOE-APPKEY and the key, with the File Imports API's bodies.
    missing = call(url, f"{BASE}/trigger/{d.name}", app_key=None)
    assert (missing.status_code, missing.json()) == (
        400,
        {"title": "HeaderMissing", "description": "MOE-APPKEY is missing in Header"},
    )
    mismatch = call(url, f"{BASE}/trigger/{d.name}", app_key="OTHER")
    assert mismatch.status_code == 401 and mismatch.json()["title"] == "HeaderMismatch"
    assert mismatch.json()["description"] == (
        "MOE_APPKEY doesn't match the Username (APP_KEY) used in Basic Auth authorization"
    )
    wrong = call(url, f"{BASE}/trigger/{d.name}", password="not-the-key")
    assert wrong.status_code == 401 and wrong.json()["title"] == "AuthenticationInvalid"
    unknown = call(url, f"{BASE}/trigger/no-such-import")
    assert (unknown.status_code, unknown.json()) == (
        400,
        {"status": "fail", "error_type": "NOT_FOUND", "message": "This import is either deleted or expired."},
    )

    triggered = call(url, f"{BASE}/trigger/{d.name}")
    assert (triggered.status_code, triggered.json()) == (
        200,
        {"status": "success", "message": "Triggered Import Successfully"},
    )
    again = call(url, f"{BASE}/trigger/{d.name}")  # once every 5 minutes per schedule
    assert (again.status_code, again.json()) == (
        400,
        {"status": "fail", "error_type": "ALREADY_EXISTS", "message": "Import has run in the last 5 min."},
    )
    done: dict[str, str] = {}

    def imported() -> bool:
        done.update({r.file_name: r.status for s in poller.tick() for r in s.files})
        return len(done) == 51

    wait_for(imported, 120, what="the triggered run")
    assert done[files[-1]] == "FAILED" and sum(s == "SUCCESSFUL" for s in done.values()) == 50

    def history(body: dict[str, Any]) -> dict[str, Any]:
        answer = call(url, f"{BASE}/import/run/history", body)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def settled() -> dict[str, Any] | None:  # the gateway follows run history: wait for the end states
        page1, page2 = history({"import_name": d.name}), history({"import_name": d.name, "offset": 2})
        states = {i["file_status"] for i in page1["data"] + page2["data"]}
        return page1 if page1["total_count"] == "51" and states == {"SUCCESSFUL", "FAILED"} else None

    first = wait_for(settled, 30, what="run history with every file done")
    assert (len(first["data"]), first["offset"], first["more_files"]) == (50, 1, "true")
    second = history({"import_id": d.name, "offset": 2})
    assert (len(second["data"]), second["offset"], second["more_files"]) == (1, 2, "false")
    item = next(i for i in first["data"] + second["data"] if i["file_name"] == files[0])
    assert set(item) == {
        "id",
        "file_name",
        "scheduled_at",
        "completed_at",
        "type",
        "file_size",
        "file_status",
        "status_msg",
        "total_rows",
        "skipped_rows",
        "updated_rows",
        "failed_rows",
        "aux_data_added_count",
        "aux_data_failed_count",
        "added_rows",
    }
    assert (item["file_status"], item["total_rows"], item["added_rows"], item["type"]) == (
        "SUCCESSFUL",
        1,
        1,
        "USERS",
    )
    assert datetime.fromisoformat(item["scheduled_at"]) <= datetime.fromisoformat(item["completed_at"])
    failed = history({"import_name": d.name, "file_status": ["FAILED"]})
    assert failed["total_count"] == "1" and failed["data"][0]["file_name"] == files[-1]
    assert failed["data"][0]["status_msg"] == "Found zero data rows in the file"
    today = datetime.now(UTC).strftime("%d/%m/%Y")
    dated = history(
        {"import_name": d.name, "date": {"start_date": today, "end_date": today, "format": "DD/MM/YYYY"}}
    )
    assert dated["total_count"] == "51"
    bad_date = call(
        url, f"{BASE}/import/run/history", {"import_name": d.name, "date": {"start_date": "31-31-2024"}}
    )
    assert bad_date.status_code == 400 and bad_date.json()["error_type"] == "Invalid Date format"
    nothing = call(url, f"{BASE}/import/run/history", {"import_name": "no-such-import"})
    assert (nothing.status_code, nothing.json()) == (
        400,
        {
            "status": "FAILURE",
            "error_type": "Import Doesn't Exist",
            "message": "No import exist in the database with the given query parameters.",
        },
    )

    details = call(url, f"{BASE}/import/status", {"import_name": d.name}).json()
    assert details["status"] == "success" and details["total_count"] == 1
    (one,) = details["data"]
    assert {k: one[k] for k in ("id", "import_type", "schedule_type", "file_source")} == {
        "id": d.name,
        "import_type": "USERS",
        "schedule_type": "ONETIME",
        "file_source": "S3",
    }
    assert one["schedule_status"] in ("SUCCESSFUL", "FAILED") and one["files"] == 51
    assert call(url, f"{BASE}/import/status", {"import_type": ["EVENTS"]}).json()["total_count"] == 0

    # Details and history take 50 requests a minute per workspace.
    codes: list[int] = []
    while 429 not in codes and len(codes) < 110:  # 110: more than 50 in one minute however it is cut
        codes.append(call(url, f"{BASE}/import/run/history", {"import_name": d.name}).status_code)
    assert codes[-1] == 429 and set(codes) == {200, 429}
    limited = call(url, f"{BASE}/import/run/history", {"import_name": d.name})
    assert limited.status_code == 429 and limited.json()["error_type"] == "RATE_LIMIT_EXCEEDED"


def test_aux_rows_are_read_by_key_over_http(
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
    gateway_url: str,
) -> None:
    d = definition(
        name=f"aux-{free_port()}",
        type="aux_data",
        file_prefix="products",
        folder="in/aux",
        date_format="ddmmyyyy",
        mappings=[
            {"column": "sku", "moe_attr": "uid"},
            {"column": "price", "moe_attr": "price", "type": "double"},
        ],
    )
    put("in/aux/products_01012024.csv", "sku,price\nsku1,10\nsku2,20\nsku3,x\n")
    put("in/aux/products_02012024.csv", "sku,price\nsku1,11.5\n")  # the latest row of a key wins
    poller = poller_factory(track_outcomes=True)  # nothing applies aux rows: they end when written
    poller.store.put(d)
    runs = {r.file_name: r for r in poller.run_import(d).files}
    first = runs["products_01012024.csv"]
    assert (first.status, first.aux_data_added_count, first.aux_data_failed_count) == (
        "PARTIAL_SUCCESS",
        2,
        1,
    )

    auth = {"Authorization": basic(WS, KEY)}
    got = requests.get(f"{gateway_url}/v1/aux/{WS}/sku1", headers=auth, timeout=60)
    assert got.status_code == 200, got.text
    data = got.json()["data"]
    assert data["key"] == "sku1" and data["attributes"] == {"price": 11.5}
    assert data["origin"] == f"{d.name}/products_02012024.csv/1"
    missing = requests.get(f"{gateway_url}/v1/aux/{WS}/nope", headers=auth, timeout=60)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "NotFound"
    denied = requests.get(f"{gateway_url}/v1/aux/{WS}/sku1", timeout=60)
    assert denied.status_code == 401

    history = call(gateway_url, f"{BASE}/import/run/history", {"import_name": d.name}).json()
    counts = {
        i["file_name"]: (i["type"], i["aux_data_added_count"], i["aux_data_failed_count"])
        for i in history["data"]
    }
    assert counts == {
        "products_01012024.csv": ("AUX_DATA", 2, 1),
        "products_02012024.csv": ("AUX_DATA", 1, 0),
    }
