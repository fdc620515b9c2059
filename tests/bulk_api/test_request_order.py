"""Order within a request, end to end through a real gateway and a real worker: a ``customer`` element's
attributes are on the profile before the events that follow it in the same request are enriched."""

from __future__ import annotations

import json
from pathlib import Path

from inflow.config.settings import KafkaSettings
from tests.bulk_api.conftest import WS
from tests.processors.workers import WorkerProcess, output_reader, worker_env
from tests.support import wait_for


def test_events_see_the_attributes_set_earlier_in_their_request(
    gateway_factory, catalogue_topics: KafkaSettings, tmp_path: Path
):
    gw = gateway_factory()
    env = worker_env(catalogue_topics, tmp_path / "home", [])
    worker = WorkerProcess("order", env, tmp_path / "data", tmp_path / "order.log").start()
    out = output_reader(catalogue_topics)
    try:
        for i in range(5):
            customer = {"type": "customer", "customer_id": f"o{i}", "attributes": {"name": f"Name {i}"}}
            actions = [{"action": "Viewed", "attributes": {"n": n}} for n in range(50)]
            event = {"type": "event", "customer_id": f"o{i}", "actions": actions}
            resp = gw.post(f"/v1/transition/{WS}", {"type": "transition", "elements": [customer, event]})
            assert resp.status_code == 200, resp.text
        wait_for(out.until(lambda o: len(o.events) >= 250, [worker]), 120, what="250 enriched events")
        named = [
            e
            for e in out.events
            if json.loads(e["user_attributes_json"]).get("u_n") == f"Name {e['customer_id'][1:]}"
        ]
        assert len(out.events) == 250
        assert len(named) == 250  # the issue asks for 99%; per-user order on one partition gives all
    except AssertionError:
        print(worker.tail())
        raise
    finally:
        code = worker.terminate()
        out.consumer.close()
    assert code == 0
