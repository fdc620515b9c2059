"""Merge User, Delete User and Device opt-out end to end: HTTP requests to a real gateway, applied by a real
worker, the result read where a user reads it (Get User, the profiles and events topics, control.audit)."""

from __future__ import annotations

import json
from pathlib import Path

from inflow.config.settings import KafkaSettings
from tests.bulk_api.conftest import WS
from tests.processors.workers import WorkerProcess, output_reader, worker_env
from tests.support import wait_for


def get_users(gw, *customer_ids: str, kind: str = "customer_id") -> dict:
    asked = [{"identifier_type": kind, "identifier": c} for c in customer_ids]
    resp = gw.post(f"/v1/customers/export?app_id={WS}", {"data": {"identifiers": asked}})
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["data"])


def test_merge_delete_and_opt_out_requests_through_gateway_and_worker(
    gateway_factory, catalogue_topics: KafkaSettings, tmp_path: Path
):
    gw = gateway_factory()
    worker = WorkerProcess(
        "e2e", worker_env(catalogue_topics, tmp_path / "home", []), tmp_path / "d", tmp_path / "w.log"
    )
    worker.start()
    out = output_reader(catalogue_topics, audit=True)
    try:
        elements = [
            {"type": "customer", "customer_id": "e2e-keep", "attributes": {"name": "Keep"}},
            {"type": "customer", "customer_id": "e2e-fold", "attributes": {"city": "Pune"}},
            {"type": "customer", "customer_id": "e2e-gone", "attributes": {"name": "Gone"}},
            {
                "type": "device",
                "customer_id": "e2e-fold",
                "device_id": "dev-1",
                "attributes": {"platform": "ANDROID", "push_id": "push-1"},
            },
        ]
        resp = gw.post(f"/v1/transition/{WS}", {"type": "transition", "elements": elements})
        assert resp.status_code == 200, resp.text

        def known() -> bool:
            worker.assert_running()
            return len(get_users(gw, "e2e-keep", "e2e-fold", "e2e-gone")["users"]) == 3

        wait_for(known, 120, what="three users in Get User")
        keep, fold = (
            get_users(gw, c)["users"][0]["user_attributes"]["moengage_id"] for c in ("e2e-keep", "e2e-fold")
        )

        merge = {"merge_data": [{"merged_user": "e2e-fold", "retained_user": "e2e-keep"}]}
        assert gw.post(f"/v1/customer/merge?app_id={WS}", merge).status_code == 200
        deleted = gw.post(f"/v1/customer/delete?app_id={WS}", {"customer_id": "e2e-gone"})
        assert deleted.status_code == 200, deleted.text

        def applied(o) -> bool:
            # The merged user's uid answers with the retained user; the deleted user is not found.
            merged = get_users(gw, fold, kind="moengage_id")["users"]
            gone = get_users(gw, "e2e-gone")["users_not_found"]
            return [u["user_attributes"]["moengage_id"] for u in merged] == [keep] and gone == ["e2e-gone"]

        wait_for(out.until(applied, [worker]), 60, what="merge and erasure seen through Get User")
        wait_for(
            out.until(
                lambda o: bool(o.audits) and "MOE_USER_MERGED" in {e["event_code"] for e in o.events},
                [worker],
            ),
            30,
            what="audit and merge event",
        )
        user = get_users(gw, fold, kind="moengage_id")["users"][0]["user_attributes"]
        assert user["uid"] == "e2e-keep" and user["city"] == "Pune" and user["u_n"] == "Keep"
        codes = {e["event_code"]: e["uid"] for e in out.events}
        assert codes["MOE_USER_MERGED"] == keep
        (audit,) = out.audits
        assert (audit["action"], audit["outcome"]) == ("user.delete", "ok")
        assert audit["request_id"] == deleted.json()["request_id"]

        opt_out = {
            "user_identifier_type": "customer_id",
            "user_identifier_value": "e2e-keep",
            "action_type": "block",
            "device_identifiers": [{"push_id": "push-1"}],
        }
        assert gw.post(f"/v1/devices/manage?app_id={WS}", opt_out).status_code == 200

        def blocked(o) -> bool:
            profile = o.latest_profiles().get(keep)
            return profile is not None and [
                d.get("moe_push_opted") for d in json.loads(profile["devices_json"])
            ] == [False]

        wait_for(out.until(blocked, [worker]), 60, what="device blocked")
        assert out.rejected == []
    except AssertionError:
        print(worker.tail())
        raise
    finally:
        code = worker.terminate()
        out.consumer.close()
    assert code == 0
