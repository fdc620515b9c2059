"""Hostile files never stop the poller: each one fails alone (or only its bad rows fail) with its reason in
run history and the error report, and the next file is imported. Real S3 server, real broker, real GnuPG."""

from __future__ import annotations

import io
import os
import signal
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from inflow.config.settings import KafkaSettings
from inflow.producers.s3_import.exceptions import FileFormatError
from inflow.producers.s3_import.poller import Poller
from inflow.producers.s3_import.reading import (
    CountingReader,
    ReadLimits,
    json_too_deep,
    read_csv,
    read_ndjson,
    text_stream,
)
from inflow.producers.s3_import.runs import RunStore
from inflow.schemas.serde import AvroSerde
from tests.s3_import.pgp_keys import GpgWorkbench, KeyPair
from tests.support import consume_n, consume_until_quiet

NDJSON_MAPPINGS = [{"column": "ID", "moe_attr": "uid"}, {"column": "a", "moe_attr": "a"}]


def stream(data: bytes) -> Any:
    return text_stream(CountingReader(io.BytesIO(data)))


def nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def test_deep_json_fails_its_row_before_the_parser_recurses() -> None:
    data = (
        b"[" * 100_000
        + b"\n"
        + f'{{"ID": "u1", "a": {nested(300)}}}\n'.encode()
        + b'{"ID": "u2", "a": "[[[[ not nesting ]]]]", "b": {"c": [[1]]}}\n'
    )
    _, rows = read_ndjson(stream(data), ["ID", "a"])
    got = [(r.number, r.cells, r.error) for r in rows]
    assert got == [
        (1, None, "not a JSON object: nested deeper than 64 levels"),
        (2, None, "not a JSON object: nested deeper than 64 levels"),
        (3, ["u2", "[[[[ not nesting ]]]]"], None),
    ]
    assert json_too_deep(nested(5), 4) and not json_too_deep(nested(4), 4)
    assert not json_too_deep('["' + "[" * 100 + '"]', 4)  # brackets inside a string do not nest


def test_a_line_over_the_limit_is_never_read_whole() -> None:
    limits = ReadLimits(max_line=1 << 20)
    header = b"ID," + b"x" * (30 << 20) + b"\n1,2\n"
    tracemalloc.start()
    try:
        with pytest.raises(FileFormatError) as info:
            read_csv(stream(header), limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(info.value) == "Line too long: the header row is longer than 1048576 characters"
    assert peak < 8 << 20  # a 30 MB line, read in pieces of at most the limit
    data = b"ID,n\n1,2\n3," + b"4" * 2_000_000 + b"\n5,6\n"
    _, rows = read_csv(stream(data), limits)
    with pytest.raises(FileFormatError, match="Line too long: a line of data row 2 is longer than 1048576"):
        list(rows)
    lines = b'{"ID": "u1"}\n{"ID": "' + b"y" * 3_000_000 + b'"}\n{"ID": "u3"}\n'
    _, json_rows = read_ndjson(stream(lines), ["ID"], limits)
    assert [(r.number, r.cells, r.error and r.error[-42:]) for r in json_rows] == [
        (1, ["u1"], None),
        (2, None, "the line is longer than 1048576 characters"),
        (3, ["u3"], None),
    ]


def test_hostile_files_fail_alone_and_the_next_file_is_imported(
    definition: Callable[..., Any],
    put: Callable[..., None],
    s3: Any,
    bucket: str,
    poller_factory: Callable[..., Poller],
    catalogue_topics: KafkaSettings,
    consumer_factory: Callable[..., Any],
    unique: str,
) -> None:
    d = definition(date_format="ddmmyyyy")
    put("in/users/registered_user_data_01012024.csv", "ID,First Name," + "x" * (20 << 20) + "\nu0,A,B\n")
    put("in/users/registered_user_data_02012024.csv", 'ID,First Name\nu1,Ann\nu2,"Bo')  # ends early
    put("in/users/registered_user_data_03012024.csv", "ID,First Name\nu3,Cid\nu4,Dee\n")
    put("in/users/registered_user_data_04012024.csv\n", "ID,First Name\nu5,Eve\n,NoId\n")
    j = definition(
        name=f"json-{unique}",
        folder="in/json",
        file_format="ndjson",
        date_format="ddmmyyyy",
        mappings=NDJSON_MAPPINGS,
    )
    put(
        "in/json/registered_user_data_01012024.json",
        "[" * 100_000 + f'\n{{"ID": "j1", "a": {nested(300)}}}\n{{"ID": "j2", "a": 1}}\n',
    )
    put("in/json/registered_user_data_02012024.json", '{"ID": "j3", "a": 2}\n')
    poller = poller_factory(max_line_chars=(13 << 20))
    csv_runs = poller.run_import(d).files
    json_runs = poller.run_import(j).files
    got = [(r.file_name, r.status, r.rows_added, r.rows_failed, r.message) for r in csv_runs + json_runs]
    assert got == [
        (
            "registered_user_data_01012024.csv",
            "FAILED",
            0,
            0,
            "Line too long: the header row is longer than 13631488 characters",
        ),
        (
            "registered_user_data_02012024.csv",
            "FAILED",
            1,
            0,
            "Cannot parse the CSV at data row 2: unexpected end of data",
        ),
        ("registered_user_data_03012024.csv", "SUCCESSFUL", 2, 0, ""),
        ("registered_user_data_04012024.csv\\n", "PARTIAL_SUCCESS", 1, 1, "At least 1 row failed"),
        ("registered_user_data_01012024.json", "PARTIAL_SUCCESS", 1, 2, "At least 1 row failed"),
        ("registered_user_data_02012024.json", "SUCCESSFUL", 1, 0, ""),
    ]
    odd = csv_runs[3]
    assert odd.error_report_key == (
        "in/users/inflow-error-reports/registered_user_data_04012024.csv\\n.errors.csv"
    )
    s3.head_object(Bucket=bucket, Key=odd.error_report_key)
    report = s3.get_object(Bucket=bucket, Key=json_runs[0].error_report_key)["Body"].read().decode()
    assert report.splitlines() == [
        "row,reason",
        "1,not a JSON object: nested deeper than 64 levels",
        "2,not a JSON object: nested deeper than 64 levels",
    ]
    history = RunStore(catalogue_topics, AvroSerde()).history(timeout=10)
    assert sorted(r["file_name"] for r in history) == sorted(r.file_name for r in csv_runs + json_runs)
    consumer = consumer_factory([catalogue_topics.topic("ingest.records")])
    msgs = consume_n(consumer, 6) + consume_until_quiet(consumer, quiet=3)
    keys = sorted(m.key().decode().split(":", 1)[1] for m in msgs)
    # u1 was sent before the file ended early: the file failed, its row stays sent (event_uuid is stable)
    assert keys == ["j2", "j3", "u1", "u3", "u4", "u5"]


def gpg_children() -> list[int]:
    """Our own ``gpg --decrypt`` child processes."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"--decrypt" in cmdline:
            found.append(int(entry.name))
    return found


def test_a_stuck_gpg_times_out_and_fails_only_its_file(
    gpg: GpgWorkbench,
    keys: dict[str, KeyPair],
    definition: Callable[..., Any],
    put: Callable[..., None],
    poller_factory: Callable[..., Poller],
) -> None:
    alice = keys["alice"]
    d = definition(
        encrypted=True,
        pgp={"decryption_key": alice.private, "passphrase": alice.passphrase},
        date_format="ddmmyyyy",
    )
    put("in/users/registered_user_data_01012024.csv.pgp", gpg.encrypt(b"ID\nu1\n", alice, armor=False))
    put("in/users/registered_user_data_02012024.csv.pgp", gpg.encrypt(b"ID\nu2\n", alice, armor=False))
    poller = poller_factory(gpg_timeout_seconds=20)
    stopped: list[int] = []
    done = threading.Event()

    def freeze_first_gpg() -> None:  # a real GnuPG that hangs: stopped with SIGSTOP
        while not done.is_set() and not stopped:
            for pid in gpg_children():
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
                break

    freezer = threading.Thread(target=freeze_first_gpg, daemon=True)
    freezer.start()
    try:
        runs = poller.run_import(d).files
    finally:
        done.set()
        freezer.join(10)
    assert len(stopped) == 1
    assert [(r.status, r.rows_added, r.message) for r in runs] == [
        ("FAILED", 0, "Unable to decrypt the file: GnuPG made no progress for 20 s (gpg was stopped)"),
        ("SUCCESSFUL", 1, ""),
    ]
