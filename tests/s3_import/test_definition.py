"""Import definitions: MoEngage's rejection reasons, manifests, secrets at rest, schedules."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.fernet import Fernet

from inflow.config.file import parse_config_text, validate_section
from inflow.config.secrets import SecretBox
from inflow.producers.s3_import.definition import (
    ImportDefinition,
    check_not_duplicate,
    from_stored,
    parse_definition,
    to_stored,
)
from inflow.producers.s3_import.exceptions import DefinitionError
from inflow.producers.s3_import.mapping import parse_manifest
from inflow.producers.s3_import.schedule import Schedule

BASE: dict[str, Any] = {
    "name": "users",
    "workspace_id": "WS",
    "type": "registered_users",
    "bucket": "b",
    "folder": "in/users",
    "access_key": "AK",
    "secret_key": "SK-very-secret",
    "date_format": "yyyymmdd",
    "mappings": [{"column": "ID", "moe_attr": "uid"}],
}


def make(**over: Any) -> ImportDefinition:
    return parse_definition(BASE | over)


@pytest.mark.parametrize(
    ("folder", "reason"),
    [
        ("", "root folders are not supported"),
        ("/", "root folders are not supported"),
        ("in/users/", "must not include a trailing slash"),
        ("/in", "must not start with a slash"),
        ("in users", "must not contain spaces"),
    ],
)
def test_folder_rules(folder: str, reason: str) -> None:
    with pytest.raises(DefinitionError, match=reason):
        make(folder=folder)


def test_up_to_ten_emails() -> None:
    assert len(make(notify_emails=[f"a{i}@x.io" for i in range(10)]).notify_emails) == 10
    with pytest.raises(DefinitionError, match="select up to 10 emails"):
        make(notify_emails=[f"a{i}@x.io" for i in range(11)])
    with pytest.raises(DefinitionError, match="not an e-mail address: nope"):
        make(notify_emails=["nope"])


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"mappings": []}, "mandatory mapping missing: User ID"),
        (
            {"type": "anonymous_users", "mappings": [{"column": "e", "moe_attr": "u_em"}]},
            "mandatory mapping missing: Anonymous ID",
        ),
        ({"type": "events", "event_name": "Buy"}, "mandatory mapping missing: Event Time"),
        (
            {
                "type": "events",
                "event_name": "Buy",
                "mappings": [
                    {
                        "column": "t",
                        "moe_attr": "event_time",
                        "type": "datetime",
                        "datetime_format": "YYYY-MM-DD",
                    }
                ],
            },
            "mandatory mapping missing: User ID",
        ),
        (
            {"mappings": [{"column": "ID", "moe_attr": "uid", "is_skipped": True}]},
            "mandatory column 'ID' \\(User ID\\) cannot be skipped",
        ),
        ({"type": "events"}, "needs event_name"),
        ({"type": "aux_data"}, "needs file_prefix"),
        ({"encrypted": True}, "Decryption key is missing"),
        (
            {"mappings": [{"column": "ID", "moe_attr": "uid"}, {"column": "X", "moe_attr": "uid"}]},
            "moe_attr 'uid' is mapped more than once",
        ),
        (
            {
                "mappings": [
                    {"column": "ID", "moe_attr": "uid"},
                    {"column": "T", "moe_attr": "t", "type": "datetime"},
                ]
            },
            "datetime_format is mandatory",
        ),
        (
            {
                "mappings": [
                    {"column": "ID", "moe_attr": "uid"},
                    {"column": "T", "moe_attr": "t", "type": "datetime", "datetime_format": "MM/DD/YYYY"},
                ]
            },
            "unsupported datetime_format",
        ),
        ({"unknown_key": 1}, "unknown key 'unknown_key'"),
        ({"app_timezone": "Mars/Base"}, "unknown timezone"),
        ({"file_prefix": "bad/prefix"}, "file_prefix may use letters"),
    ],
)
def test_rejections_name_their_reason(over: dict[str, Any], reason: str) -> None:
    with pytest.raises(DefinitionError, match=reason):
        make(**over)


def test_event_time_in_utc_or_app_timezone_satisfies_the_mandatory_mapping() -> None:
    for attr in ("event_time_utc", "event_time_app_timezone"):
        d = make(
            type="events",
            event_name="Purchase Summary",
            mappings=[
                {"column": "u", "moe_attr": "uid"},
                {"column": "t", "moe_attr": attr, "type": "datetime", "datetime_format": "YYYY-MM-DD"},
            ],
        )
        assert d.prefix == "Purchase_Summary"


def test_duplicate_import_same_type_subtype_folder_bucket() -> None:
    first = make(name="a")
    with pytest.raises(DefinitionError, match="duplicate of import a"):
        check_not_duplicate(make(name="b"), [first])
    check_not_duplicate(make(name="c", folder="other"), [first])
    check_not_duplicate(make(name="d", bucket="other"), [first])
    check_not_duplicate(
        make(
            name="e",
            type="anonymous_users",
            mappings=[{"column": "e", "moe_attr": "u_em", "role": "anonymous_id"}],
        ),
        [first],
    )
    check_not_duplicate(make(name="f"), [first.model_copy(update={"archived": True})])
    ev = {
        "type": "events",
        "mappings": [
            {"column": "u", "moe_attr": "uid"},
            {"column": "t", "moe_attr": "event_time", "type": "datetime", "datetime_format": "YYYY-MM-DD"},
        ],
    }
    buy = make(name="g", event_name="Buy", **ev)
    check_not_duplicate(make(name="h", event_name="Sell", **ev), [buy])
    with pytest.raises(DefinitionError, match="duplicate"):
        check_not_duplicate(make(name="i", event_name="Buy", **ev), [buy])


def test_manifest_fills_mappings_and_keeps_given_ones() -> None:
    manifest = json.dumps(
        {
            "mapping": [
                {"column": "ID", "moe_attr": "uid", "type": "string", "is_skipped": False},
                {
                    "column": "First Seen",
                    "moe_attr": "cr_t",
                    "type": "datetime",
                    "datetime_format": "YYYY-MM-DD hh:mm:ss",
                },
                {"column": "LTV", "moe_attr": "t_rev", "type": "double"},
            ]
        }
    )
    d = make(mappings=[{"column": "LTV", "moe_attr": "ltv_custom"}], manifest=manifest)
    assert [(m.column, m.moe_attr) for m in d.mappings] == [
        ("LTV", "ltv_custom"),
        ("ID", "uid"),
        ("First Seen", "cr_t"),
    ]
    with pytest.raises(DefinitionError, match="manifest is not valid JSON"):
        parse_manifest("{")
    with pytest.raises(DefinitionError, match='a "mapping" list'):
        parse_manifest("{}")
    with pytest.raises(DefinitionError, match=r"manifest mapping\[0\]: moe_attr"):
        parse_manifest('{"mapping": [{"column": "a", "moe_attr": ""}]}')


def test_a_manifest_nested_too_deep_is_a_definition_error() -> None:
    with pytest.raises(DefinitionError, match="manifest is not valid JSON: RecursionError"):
        parse_manifest("[" * 100_000)


def test_secrets_encrypted_at_rest_and_never_printed() -> None:
    box = SecretBox(Fernet.generate_key())
    d = make(
        encrypted=True, pgp={"decryption_key": "-----BEGIN PGP PRIVATE KEY BLOCK-----x", "passphrase": "pp!"}
    )
    stored = json.dumps(to_stored(d, box))
    for secret in ("SK-very-secret", "BEGIN PGP PRIVATE", "pp!"):
        assert secret not in stored
        assert secret not in json.dumps(d.public_dict()) and secret not in repr(d)
    back = from_stored(json.loads(stored), box)
    assert back.secret_key.get_secret_value() == "SK-very-secret"
    assert back.pgp is not None and back.pgp.passphrase.get_secret_value() == "pp!"


def test_yaml_imports_section_validates_with_this_model() -> None:
    cfg = parse_config_text(
        "imports:\n  - name: y\n    workspace_id: W\n    type: registered_users\n    bucket: b\n"
        "    folder: f\n    access_key: a\n    secret_key: ${S3_SECRET_FOR_TEST:-dflt}\n"
        "    date_format: ddmmyyyy\n    mappings: [{column: ID, moe_attr: uid}]\n",
        environ={},
    )
    d = parse_definition(cfg.imports[0], where="imports[0]")
    assert d.secret_key.get_secret_value() == "dflt"
    with pytest.raises(DefinitionError, match="imports\\[0\\]: unknown key 'colour'"):
        parse_definition(cfg.imports[0] | {"colour": "red"}, where="imports[0]")
    assert validate_section(Schedule, {"kind": "one_time"}, "s").kind == "one_time"


def hours(n: int) -> datetime:
    return datetime(2024, 1, 1, tzinfo=UTC).replace(hour=n)


@pytest.mark.parametrize(
    ("schedule", "now", "due", "nxt"),
    [
        ({"kind": "one_time"}, hours(1), hours(0), None),
        ({"kind": "one_time", "at": hours(5).isoformat()}, hours(1), None, hours(5)),
        ({"kind": "periodic", "every": "hourly"}, hours(3), hours(3), hours(4)),
        (
            {"kind": "periodic", "every": "minutes", "interval": 15},
            hours(1).replace(minute=20),
            hours(1).replace(minute=15),
            hours(1).replace(minute=30),
        ),
        ({"kind": "periodic", "every": "daily"}, hours(3), hours(0), datetime(2024, 1, 2, tzinfo=UTC)),
        ({"kind": "periodic", "every": "weekly"}, hours(3), hours(0), datetime(2024, 1, 8, tzinfo=UTC)),
        ({"kind": "periodic", "every": "monthly"}, hours(3), hours(0), datetime(2024, 2, 1, tzinfo=UTC)),
        ({"kind": "periodic", "every": "hourly", "end_after_runs": 3}, hours(9), hours(2), None),
        ({"kind": "periodic", "every": "hourly", "end_at": hours(4).isoformat()}, hours(9), hours(4), None),
    ],
)
def test_schedule_occurrences(schedule: dict[str, Any], now: datetime, due: Any, nxt: Any) -> None:
    s = Schedule.model_validate(schedule)
    assert s.latest_due(now, hours(0)) == due
    assert s.next_after(now, hours(0)) == nxt


def test_schedule_rejects_inconsistent_settings() -> None:
    for bad in ({"kind": "periodic"}, {"kind": "one_time", "every": "daily"}):
        with pytest.raises(ValueError):
            Schedule.model_validate(bad)
