"""A real worker applies the gateway's request records: Merge User (retained user as named, LTV summed),
Delete User (profile tombstoned, audit record, the customer id later a new user), Device opt-out, and the
rejections of requests naming unknown users or devices."""

from __future__ import annotations

import json
from pathlib import Path

from tests.processors import records as r
from tests.processors.workers import WorkerProcess, output_reader, produce, worker_env
from tests.support import wait_for

WORKSPACES = [{"id": "D", "identifiers": ["customer_id"]}]
IMPORTED = {"source": "s3_import"}


def test_worker_applies_merge_delete_and_opt_out_requests(worker_topics, producer_factory, tmp_path: Path):
    kafka = worker_topics
    worker = WorkerProcess(
        "req", worker_env(kafka, tmp_path / "home", WORKSPACES), tmp_path / "d", tmp_path / "w.log"
    )
    worker.start()
    out = output_reader(kafka, audit=True)
    producer = producer_factory()
    try:
        produce(
            producer,
            kafka,
            [
                (
                    "UserUpsert",
                    r.user("D", "keep", at=1, attributes={"name": "Keep", "t_rev": 10.0}) | IMPORTED,
                ),
                (
                    "UserUpsert",
                    r.user("D", "fold", at=9, attributes={"city": "Pune", "t_rev": 5.5}) | IMPORTED,
                ),
                ("DeviceUpsert", r.device("D", "fold", "dev-f", at=9, push_id="push-f", platform="ANDROID")),
                ("UserUpsert", r.user("D", "erase", at=2, attributes={"name": "Gone"})),
                ("DeviceUpsert", r.device("D", "erase", "dev-e", at=2, platform="iOS")),
            ],
        )

        def uid_of(o, cid):
            """The live (not tombstoned) user of a customer id."""
            latest = o.latest_profiles().items()
            return next(
                (u for u, p in latest if p["customer_id"] == cid and b"D:" + u.encode() not in o.tombstones),
                None,
            )

        wait_for(
            out.until(lambda o: all(uid_of(o, c) for c in ("keep", "fold", "erase")), [worker]),
            120,
            what="users",
        )
        keep, fold, erase = (uid_of(out, c) for c in ("keep", "fold", "erase"))
        produce(
            producer,
            kafka,
            [
                ("MergeRequest", r.merge("D", "fold", "keep", at=20)),
                ("MergeRequest", r.merge("D", "nobody", "keep", at=20)),
                ("DeleteRequest", r.delete("D", "erase", at=20)),
                ("DeleteRequest", r.delete("D", "never", at=20)),
            ],
        )
        wait_for(
            out.until(
                lambda o: (
                    any(e["event_code"] == "MOE_USER_MERGED" for e in o.events)
                    and len(o.audits) == 2
                    and len(o.rejected) == 2
                ),
                [worker],
            ),
            60,
            what="merge, erasure and rejections",
        )
        merged = {
            e["event_code"]: e["uid"] for e in out.events if e["event_code"].startswith("MOE_USER_MERGE")
        }
        assert merged == {"MOE_USER_MERGED": keep, "MOE_USER_MERGE_EVENT": fold}  # fold was seen last
        profile = out.latest_profiles()[keep]
        assert json.loads(profile["attributes_json"])["t_rev"] == 15.5 and profile["merged_uids"] == [fold]
        assert out.latest_profiles()[fold]["merged_into"] == keep
        assert f"D:{erase}".encode() in out.tombstones
        assert sorted((a["outcome"], a["target"], a["request_id"]) for a in out.audits) == [
            ("ok", "D:erase", "req-delete"),
            ("rejected", "D:never", "req-delete"),
        ]
        assert sorted(x["reason"] for x in out.rejected) == [
            "merged_user 'nobody' is not a known user",
            "no user has customer_id 'never'",
        ]
        # The device of the merged user is the retained user's now: opt it out, then a device it lacks.
        produce(
            producer,
            kafka,
            [
                ("DeviceOptOut", r.opt_out("D", "keep", [{"push_id": "push-f"}], at=30)),
                ("DeviceOptOut", r.opt_out("D", "keep", [{"unique_id": "dev-e"}], at=30)),
                ("UserUpsert", r.user("D", "erase", at=40, attributes={"city": "Oslo"})),
            ],
        )

        def opted(o):
            devices = json.loads(o.latest_profiles()[keep]["devices_json"])
            return [d.get("moe_push_opted") for d in devices] == [False]

        wait_for(
            out.until(
                lambda o: opted(o) and len(o.rejected) == 3 and uid_of(o, "erase") not in (None, erase),
                [worker],
            ),
            60,
            what="opt-out and a new user",
        )
        assert out.rejected[-1]["reason"] == 'no device of the user matches [{"unique_id": "dev-e"}]'
        reborn = out.latest_profiles()[uid_of(out, "erase")]
        assert json.loads(reborn["attributes_json"]).get("u_n") is None and reborn["devices_json"] == "[]"
    finally:
        out.consumer.close()
        assert worker.terminate() == 0, worker.tail()
