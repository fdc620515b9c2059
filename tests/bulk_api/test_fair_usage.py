"""The Fair Usage Policy end to end: two gateways, a real worker process, the real broker. One user sent
over its limit through both gateways is blocked (its later records rejected with the reason, not enriched),
another user is not, and the block outlives the worker (a new one restores it from the changelog)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests

from inflow.config.settings import KafkaSettings
from inflow.local.process import free_port
from tests.bulk_api.conftest import WS
from tests.processors.workers import Outputs, WorkerProcess, output_reader, worker_env
from tests.support import wait_for

# One window of ten years (windows are aligned to UTC: both requests fall into the same one whatever the
# clock says), 6 data records per user, a block of an hour.
LIMITS = {"windows": [{"seconds": 10 * 365 * 86_400, "max_requests": 6, "block_seconds": 3_600}]}
REASON = "Fair usage policy: user customer_id 'heavy' blocked until "


def bulk(*elements: dict[str, Any]) -> dict[str, Any]:
    return {"type": "transition", "elements": list(elements)}


def events(customer_id: str, n: int, tag: str) -> dict[str, Any]:
    actions = [{"action": "Viewed", "attributes": {"n": f"{tag}{i}"}} for i in range(n)]
    return {"type": "event", "customer_id": customer_id, "actions": actions}


def customer(customer_id: str) -> dict[str, Any]:
    return {"type": "customer", "customer_id": customer_id, "attributes": {"name": customer_id}}


def of(out: Outputs, customer_id: str) -> list[dict[str, Any]]:
    return [e for e in out.events if e["customer_id"] == customer_id]


def metric(worker: WorkerProcess, name: str, *labels: str) -> float:
    url = f"http://127.0.0.1:{worker.env['INFLOW_WORKER_METRICS_PORT']}/metrics"
    for line in requests.get(url, timeout=5).text.splitlines():
        if line.startswith(name + "{") and all(label in line for label in labels):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_user_over_the_limit_is_blocked_across_gateways_and_worker_restarts(
    gateway_factory, catalogue_topics: KafkaSettings, tmp_path: Path
):
    gw1, gw2 = gateway_factory(), gateway_factory()
    env = worker_env(catalogue_topics, tmp_path / "home", [{"id": WS, "fair_usage": LIMITS}])
    first = WorkerProcess(
        "fup-1", env | {"INFLOW_WORKER_METRICS_PORT": str(free_port())}, tmp_path / "d1", tmp_path / "1.log"
    ).start()
    second: WorkerProcess | None = None
    out = output_reader(catalogue_topics)
    try:
        # heavy: 5 records through one gateway, then 4 through the other; 7 and later are over the limit.
        for gw, body in (
            (
                gw1,
                bulk(customer("heavy"), events("heavy", 4, "a"), customer("light"), events("light", 2, "a")),
            ),
            (gw2, bulk(events("heavy", 4, "b"), events("light", 2, "b"))),
        ):
            resp = gw.post(f"/v1/transition/{WS}", body)
            assert resp.status_code == 200, resp.text
        wait_for(
            out.until(lambda o: len(o.events) >= 9 and len(o.rejected) >= 3, [first]),
            120,
            what="9 events and 3 rejections",
        )
        assert len(of(out, "heavy")) == 5 and len(of(out, "light")) == 4
        assert len(out.rejected) == 3
        assert all(r["reason"].startswith(REASON) for r in out.rejected), out.rejected
        assert out.rejected[0]["reason"].endswith("after more than 6 data requests in 3650 days")
        assert {r["event_uuid"] for r in out.rejected}.isdisjoint(e["event_uuid"] for e in out.events)
        wait_for(
            lambda: (
                metric(first, "inflow_worker_fair_usage_blocks_total", f'workspace="{WS}"') == 1
                and metric(first, "inflow_worker_rejections_total", 'reason="fair_usage"') == 3
            ),
            30,
            what="the worker's fair usage metrics",
        )
        assert first.terminate() == 0

        # Another worker on an empty disk: the block comes back from the changelog, the counts do not.
        second = WorkerProcess(
            "fup-2",
            env | {"INFLOW_WORKER_METRICS_PORT": str(free_port())},
            tmp_path / "d2",
            tmp_path / "2.log",
        ).start()
        resp = gw1.post(f"/v1/transition/{WS}", bulk(events("heavy", 1, "c"), events("light", 1, "c")))
        assert resp.status_code == 200, resp.text
        wait_for(
            out.until(lambda o: len(of(o, "light")) >= 5 and len(o.rejected) >= 4, [second]),
            120,
            what="light's event and heavy's rejection after the restart",
        )
        assert len(of(out, "heavy")) == 5
        assert out.rejected[3]["reason"] == out.rejected[0]["reason"]  # the same block, restored
    except AssertionError:
        print(first.tail(), second.tail() if second else "")
        raise
    finally:
        for worker in (first, second):
            if worker is not None and worker.proc is not None and worker.proc.poll() is None:
                worker.terminate()
        out.consumer.close()
