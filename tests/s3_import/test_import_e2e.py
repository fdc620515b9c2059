"""File imports end to end: real S3 folder, real broker, real SMTP server."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from inflow.config.settings import KafkaSettings
from inflow.producers.s3_import.poller import Poller
from inflow.producers.s3_import.records import row_uuid, uuid_prefix
from inflow.schemas.serde import AvroSerde
from tests.s3_import.conftest import EVENT_MAPPINGS, Inbox
from tests.support import consume_n, consume_until_quiet, wait_for

USERS_CSV = (
    "ID,First Name,LTV,Installed,First Seen\n"
    "u1,Ann,10.5,true,2024-01-02 03:04:05\n"
    "u2,Bob,abc,false,2024-01-02 03:04:05\n"
    "u3,Cid,7,yes,2024-13-02 03:04:05\n"
    "\n"
    ",NoId,1,true,2024-01-02 03:04:05\n"
    "u4,Dee,,,\n"
)


def decode_all(msgs: list[Any]) -> list[tuple[bytes, dict[str, Any]]]:
    serde = AvroSerde()
    return [(m.key(), serde.decode(m.value())[1]) for m in msgs]


def test_registered_users_partial_success_with_error_report_and_email(
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
    catalogue_topics: KafkaSettings,
    consumer_factory: Callable[..., Any],
    s3: Any,
    bucket: str,
    smtp_inbox: tuple[Inbox, int],
    unique: str,
) -> None:
    d = definition(notify_emails=[f"ops-{unique}@example.com"])
    put("in/users/registered_user_data_20240102.csv", USERS_CSV)
    put("in/users/sub/registered_user_data_20240103.csv", USERS_CSV)  # sub-folder: never read
    put("in/users/registered_user_data_2024010.csv", USERS_CSV)  # wrong date format: never read
    poller = poller_factory()
    poller.store.put(d)
    summary = poller.run_import(d)
    assert [r.file_name for r in summary.files] == ["registered_user_data_20240102.csv"]
    run = summary.files[0]
    assert (run.rows_total, run.rows_added, run.rows_failed, run.rows_skipped) == (6, 2, 3, 1)
    assert run.status == "PARTIAL_SUCCESS" and run.message == "At least 1 row failed"

    msgs = consume_n(consumer_factory([catalogue_topics.topic("ingest.records")]), 2)
    records = {r["customer_id"]: (k, r) for k, r in decode_all(msgs)}
    key, u1 = records["u1"]
    assert key == b"WS1:u1"
    assert json.loads(u1["attributes_json"]) == {
        "u_fn": "Ann",
        "t_rev": 10.5,
        "installed": True,
        "cr_t": "2024-01-02T03:04:05+00:00",
    }
    assert u1["source"] == "s3_import" and u1["origin"] == f"{d.name}/registered_user_data_20240102.csv/1"
    prefix = uuid_prefix(d.name, f"{bucket}/in/users", "registered_user_data_20240102.csv")
    assert u1["event_uuid"] == row_uuid(prefix, 1)
    assert json.loads(records["u4"][1]["attributes_json"]) == {"u_fn": "Dee"}  # empty cells: no update

    report = s3.get_object(Bucket=bucket, Key=run.error_report_key)["Body"].read().decode()
    assert (
        run.error_report_key == "in/users/inflow-error-reports/registered_user_data_20240102.csv.errors.csv"
    )
    lines = report.splitlines()
    assert lines[0] == "row,reason"
    assert lines[1].startswith("2,") and "is not a double" in lines[1]
    assert lines[2].startswith("3,") and "not a valid date-time" in lines[2]
    assert lines[3].startswith("5,") and "(ID) is absent" in lines[3]

    inbox = smtp_inbox[0]
    mail = wait_for(
        lambda: [m for m in inbox.messages if f"ops-{unique}@example.com" in m["to"]], 30, what="e-mail"
    )
    assert "PARTIAL_SUCCESS" in mail[0]["body"] and "Failed: 3" in mail[0]["body"]

    history = poller.runs.history(d.name)
    assert history[-1]["status"] == "PARTIAL_SUCCESS" and history[-1]["rows_total"] == 6

    again = poller.run_import(d)  # the ledger: a file is processed once whatever its outcome
    assert again.files == [] and "already processed" in again.skipped["registered_user_data_20240102.csv"]


def test_events_ndjson_and_csv_with_app_timezone(
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
    catalogue_topics: KafkaSettings,
    consumer_factory: Callable[..., Any],
    unique: str,
) -> None:
    csv_import = definition(
        name=f"ev-{unique}",
        type="events",
        event_name="Purchase Summary",
        folder="ev",
        date_format="mm_yyyy",
        mappings=EVENT_MAPPINGS,
    )
    put(
        "ev/Purchase_Summary_01_2024.csv",
        'user,time,amount,tags\nu1,2024-01-02T10:00:00+05:30,12.5,"[a|b|c]"\nu2,2024-01-02T10:00:00Z,1,x\n',
    )
    json_import = definition(
        name=f"evj-{unique}",
        type="events",
        event_name="MOE_APP_OPENED",
        folder="evj",
        file_format="ndjson",
        date_format="yyyymmdd_hhmm",
        app_timezone="Asia/Kolkata",
        mappings=[
            {"column": "user.id", "moe_attr": "uid"},
            {
                "column": "ts",
                "moe_attr": "event_time_app_timezone",
                "type": "datetime",
                "datetime_format": "YYYY-MM-DD hh:mm:ss",
            },
            {"column": "props", "moe_attr": "props"},
        ],
    )
    put(
        "evj/MOE_APP_OPENED_20240131_1259.json",
        '{"user": {"id": "u9"}, "ts": "2024-01-02 10:00:00", "props": {"k": [1, 2]}, "extra": 1}\n',
    )
    poller = poller_factory()
    runs = poller.run_import(csv_import).files + poller.run_import(json_import).files
    assert [r.status for r in runs] == ["SUCCESSFUL", "SUCCESSFUL"]
    assert runs[1].unmapped_columns == ["extra"] and runs[1].message == "unmapped columns: extra"
    events = {
        r["customer_id"]: r
        for _, r in decode_all(consume_n(consumer_factory([catalogue_topics.topic("ingest.records")]), 3))
    }
    assert events["u1"]["action"] == "Purchase Summary"
    assert events["u1"]["user_time"] == datetime(2024, 1, 2, 4, 30, tzinfo=UTC)
    assert json.loads(events["u1"]["attributes_json"]) == {"amount": 12.5, "tags": ["a", "b", "c"]}
    assert events["u9"]["user_time"] == datetime(2024, 1, 2, 4, 30, tzinfo=UTC)  # app timezone IST
    assert json.loads(events["u9"]["attributes_json"]) == {"props": {"k": [1, 2]}}


def test_anonymous_users_and_aux_data(
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
    catalogue_topics: KafkaSettings,
    consumer_factory: Callable[..., Any],
    unique: str,
) -> None:
    anon = definition(
        name=f"anon-{unique}",
        type="anonymous_users",
        folder="anon",
        date_format="mon_yyyy",
        mappings=[
            {"column": "email", "moe_attr": "u_em", "role": "anonymous_id"},
            {"column": "city", "moe_attr": "city"},
        ],
    )
    put("anon/anonymous_user_data_jan_2022.csv", "email,city\na@x.io,Pune\n")
    aux = definition(
        name=f"aux-{unique}",
        type="aux_data",
        folder="aux",
        file_prefix="store list",
        date_format="ddmmyyyy",
        mappings=[{"column": "ID", "moe_attr": "uid"}, {"column": "name", "moe_attr": "name"}],
    )
    put("aux/store list_31012024.csv", "ID,name\ns1,Shop\n")
    poller = poller_factory()
    assert poller.run_import(anon).files[0].status == "SUCCESSFUL"
    assert poller.run_import(aux).files[0].status == "SUCCESSFUL"
    ((key, user),) = decode_all(consume_n(consumer_factory([catalogue_topics.topic("ingest.records")]), 1))
    assert key == b"WS1:a@x.io" and user["anonymous_id"] == "a@x.io" and user["customer_id"] is None
    assert json.loads(user["attributes_json"]) == {"u_em": "a@x.io", "city": "Pune"}
    ((_, row),) = decode_all(consume_n(consumer_factory([catalogue_topics.topic("ingest.aux")]), 1))
    assert row["customer_id"] == "s1" and json.loads(row["attributes_json"]) == {"name": "Shop"}


def test_failed_files_report_the_reason_by_email(
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
    smtp_inbox: tuple[Inbox, int],
    unique: str,
) -> None:
    d = definition(notify_emails=[f"fail-{unique}@example.com"], date_format="ddmmyyyy")
    put("in/users/registered_user_data_01012024.csv", b"ID,First Name\nu1,Ren\xe9\n")
    put("in/users/registered_user_data_02012024.csv", "ID,First Name\n")
    put("in/users/registered_user_data_03012024.csv", "ID,First Name\r\nu1,A\r\n")
    put("in/users/registered_user_data_04012024.csv", "ID,ID\nu1,u2\n")
    put("in/users/registered_user_data_05012024.csv", "First Name\nAnn\n")
    put("in/users/registered_user_data_06012024.csv", 'ID,First Name\nu1,"' + "x" * 140_000 + '"\n')
    put("in/users/registered_user_data_07012024.csv", "ID,LTV\nu1,abc\nu2,def\n")
    poller = poller_factory()
    runs = {r.file_name[-12:-4]: r for r in poller.run_import(d).files}
    assert all(r.status == "FAILED" for r in runs.values())
    assert runs["01012024"].message.startswith(
        "File is in an unsupported format or contains invalid characters"
    )
    assert "'utf-8' codec can't decode byte 0xe9" in runs["01012024"].message
    assert runs["02012024"].message == "Found zero data rows in the file"
    assert "\\r\\n" in runs["03012024"].message
    assert runs["04012024"].message == "Duplicate column names in the header: ID"
    assert runs["05012024"].message.startswith(
        "Column value for the selected identifier attribute (ID) is absent"
    )
    assert runs["06012024"].message.startswith("Field larger than field limit (131072 characters, 128 KB)")
    assert runs["07012024"].message == "All rows failed" and runs["07012024"].rows_failed == 2
    inbox = smtp_inbox[0]
    mails = wait_for(
        lambda: (
            len([m for m in inbox.messages if f"fail-{unique}@example.com" in m["to"]]) == 7
            and [m for m in inbox.messages if f"fail-{unique}@example.com" in m["to"]]
        ),
        30,
    )
    assert any("Reason: Found zero data rows in the file" in m["body"] for m in mails)


def test_file_dropped_while_periodic_import_runs_is_picked_up_once(
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
    catalogue_topics: KafkaSettings,
    consumer_factory: Callable[..., Any],
) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    d = definition(
        schedule={"kind": "periodic", "every": "minutes", "interval": 10, "start_at": start.isoformat()}
    )
    put("in/users/registered_user_data_20240101.csv", "ID,First Name\nu1,A\n")
    poller = poller_factory()
    poller.store.put(d)
    first = poller.tick(datetime(2024, 1, 1, 0, 5, tzinfo=UTC))
    assert [f.file_name for s in first for f in s.files] == ["registered_user_data_20240101.csv"]
    assert poller.tick(datetime(2024, 1, 1, 0, 9, tzinfo=UTC)) == []  # same occurrence: no second run
    put("in/users/registered_user_data_20240102.csv", "ID,First Name\nu2,B\n")
    second = poller.tick(datetime(2024, 1, 1, 0, 10, tzinfo=UTC))
    assert [f.file_name for s in second for f in s.files] == ["registered_user_data_20240102.csv"]
    third = poller.tick(datetime(2024, 1, 1, 0, 20, tzinfo=UTC))
    assert [f.file_name for s in third for f in s.files] == [] and len(third[0].skipped) == 2
    msgs = consume_until_quiet(consumer_factory([catalogue_topics.topic("ingest.records")]), quiet=3)
    assert sorted(r["customer_id"] for _, r in decode_all(msgs)) == ["u1", "u2"]


def test_archive_stops_future_runs_and_schedule_ends(
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    d = definition(
        schedule={"kind": "periodic", "every": "hourly", "start_at": start.isoformat(), "end_after_runs": 2}
    )
    poller = poller_factory()
    poller.store.put(d)
    put("in/users/registered_user_data_20240101.csv", "ID\nu1\n")
    assert len(poller.tick(datetime(2024, 1, 1, 0, 30, tzinfo=UTC))[0].files) == 1
    put("in/users/registered_user_data_20240102.csv", "ID\nu2\n")
    assert poller.tick(datetime(2024, 1, 1, 5, 0, tzinfo=UTC))[0].files[0].file_name.endswith("0102.csv")
    put("in/users/registered_user_data_20240103.csv", "ID\nu3\n")
    assert poller.tick(datetime(2024, 1, 1, 9, 0, tzinfo=UTC)) == []  # ended after 2 runs
    poller.store.put(
        d.model_copy(update={"schedule": d.schedule.model_copy(update={"end_after_runs": None})}),
        replace=True,
    )
    poller.store.archive(d.name)
    assert poller.tick(datetime(2024, 1, 2, tzinfo=UTC)) == []  # archived: no more runs


def test_failed_file_is_not_retried_unless_configured(
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
    unique: str,
) -> None:
    once = definition(name=f"once-{unique}", folder="once")
    twice = definition(name=f"twice-{unique}", folder="twice", retry={"max_attempts": 2})
    put("once/registered_user_data_20240101.csv", "ID\n")
    put("twice/registered_user_data_20240101.csv", "ID\n")
    poller = poller_factory()
    assert [r.status for r in poller.run_import(once).files] == ["FAILED"]
    assert poller.run_import(once).skipped == {
        "registered_user_data_20240101.csv": "already processed (FAILED)"
    }
    assert [r.status for r in poller.run_import(twice).files] == ["FAILED"]
    put("twice/registered_user_data_20240101.csv", "ID\nu1\n")  # fixed in place: the retry picks it up
    (retried,) = poller.run_import(twice).files
    assert retried.status == "SUCCESSFUL" and retried.run_id != poller.runs.history(twice.name)[0]["run_id"]
    assert poller.run_import(twice).files == []


def test_a_row_over_the_size_limit_fails_alone_and_the_file_goes_on(
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
    catalogue_topics: KafkaSettings,
    consumer_factory: Callable[..., Any],
    admin: AdminClient,
    s3: Any,
    bucket: str,
    unique: str,
) -> None:
    # A CSV cell holds at most 128 KB, so a row over Kafka's 1 MB default needs nine large mapped cells.
    wide = [f"c{i}" for i in range(9)]
    users = definition(
        mappings=[{"column": "ID", "moe_attr": "uid"}, *({"column": c, "moe_attr": c} for c in wide)]
    )
    big = ",".join("x" * 120_000 for _ in wide)
    small = ",".join("s" for _ in wide)
    put(
        "in/users/registered_user_data_20240102.csv",
        f"ID,{','.join(wide)}\nu1,{small}\nu2,{big}\nu3,{small}\n",
    )
    # A topic whose max.message.bytes is small: the producer reads the topic's own limit.
    aux_topic = catalogue_topics.topic("ingest.aux")
    altered = admin.incremental_alter_configs(
        [
            ConfigResource(
                ResourceType.TOPIC,
                aux_topic,
                incremental_configs=[
                    ConfigEntry("max.message.bytes", "4096", incremental_operation=AlterConfigOpType.SET)
                ],
            )
        ]
    )
    for future in altered.values():
        future.result(timeout=30)
    aux = definition(
        name=f"aux-{unique}",
        type="aux_data",
        folder="aux",
        file_prefix="stores",
        date_format="ddmmyyyy",
        mappings=[{"column": "ID", "moe_attr": "uid"}, {"column": "name", "moe_attr": "name"}],
    )
    put("aux/stores_31012024.csv", f"ID,name\ns1,Shop\ns2,{'n' * 5_000}\n\ns3,Mall\n")

    poller = poller_factory()
    (run,) = poller.run_import(users).files
    assert (run.rows_total, run.rows_added, run.rows_failed, run.rows_skipped) == (3, 2, 1, 0)
    assert run.status == "PARTIAL_SUCCESS" and run.message == "At least 1 row failed"
    lines = s3.get_object(Bucket=bucket, Key=run.error_report_key)["Body"].read().decode().splitlines()
    assert lines[0] == "row,reason" and len(lines) == 2
    assert lines[1].startswith("2,row too large for Kafka: record of ")
    assert f"byte limit of topic {catalogue_topics.topic('ingest.records')}" in lines[1]

    (aux_run,) = poller.run_import(aux).files
    assert (aux_run.rows_total, aux_run.rows_added, aux_run.rows_failed, aux_run.rows_skipped) == (4, 2, 1, 1)
    report = s3.get_object(Bucket=bucket, Key=aux_run.error_report_key)["Body"].read().decode()
    assert report.splitlines()[1].startswith("2,row too large for Kafka:") and "3968-byte limit" in report

    history = {r["file_name"]: r for r in poller.runs.history()}
    assert history["registered_user_data_20240102.csv"]["rows_failed"] == 1
    assert history["stores_31012024.csv"]["status"] == "PARTIAL_SUCCESS"
    users_out = consume_until_quiet(consumer_factory([catalogue_topics.topic("ingest.records")]), quiet=3)
    assert sorted(r["customer_id"] for _, r in decode_all(users_out)) == ["u1", "u3"]
    aux_out = consume_until_quiet(consumer_factory([aux_topic]), quiet=3)
    assert sorted(r["customer_id"] for _, r in decode_all(aux_out)) == ["s1", "s3"]
