"""Through the real command line: a users import defined with MoEngage's manifest example (§4.5) carries the
mapped LTV column as ``t_rev`` into the record on the ingest topic; auxiliary data lands in the compacted
aux topic and ``inflow aux get`` reads it by key."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka.admin import AdminClient, ConfigResource
from cryptography.fernet import Fernet

from inflow.config.settings import KafkaSettings, S3Settings
from inflow.schemas.serde import AvroSerde
from tests.s3_import.conftest import repo_root
from tests.support import consume_n

# The manifest of MoEngage's documentation (§4.5), unchanged.
MANIFEST = {
    "mapping": [
        {"column": "ID", "moe_attr": "uid", "type": "string", "is_skipped": False},
        {"column": "First Name", "moe_attr": "u_fn", "type": "string", "is_skipped": False},
        {
            "column": "First Seen",
            "moe_attr": "cr_t",
            "type": "datetime",
            "datetime_format": "YYYY-MM-DD hh:mm:ss",
            "is_skipped": False,
        },
        {"column": "LTV", "moe_attr": "t_rev", "type": "double", "is_skipped": False},
        {"column": "Install Status", "moe_attr": "installed", "type": "bool", "is_skipped": False},
    ]
}


def inflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inflow.cli", *args],
        env=env | {"COLUMNS": "200"},
        cwd=repo_root(),
        capture_output=True,
        text=True,
        timeout=180,
    )


def base(s3_settings: S3Settings, bucket: str, **over: Any) -> dict[str, Any]:
    return {
        "workspace_id": "WS1",
        "bucket": bucket,
        "access_key": s3_settings.access_key_id,
        "secret_key": s3_settings.secret_access_key.get_secret_value(),
        "endpoint_url": s3_settings.endpoint_url,
        "date_format": "yyyymmdd",
    } | over


def test_ltv_column_reaches_the_ingest_record_and_aux_rows_are_read_by_key(
    service_env: dict[str, str],
    catalogue_topics: KafkaSettings,
    s3_settings: S3Settings,
    bucket: str,
    put: Callable[..., None],
    consumer_factory: Callable[..., Any],
    admin: AdminClient,
    tmp_path: Path,
    unique: str,
) -> None:
    env = service_env | {
        "INFLOW_SECRET_KEY": Fernet.generate_key().decode(),
        "INFLOW_POLLER_GROUP_ID": unique,
    }
    users = tmp_path / "users.yaml"
    users.write_text(
        yaml.safe_dump(base(s3_settings, bucket, name=f"ltv-{unique}", type="registered_users", folder="ltv"))
    )
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(MANIFEST))
    put(
        "ltv/registered_user_data_20240101.csv",
        "ID,First Name,First Seen,LTV,Install Status\nu1,Ann,2024-01-02 03:04:05,1234.5,true\n",
    )
    added = inflow(env, "imports", "add", str(users), "--manifest", str(manifest))
    assert added.returncode == 0, added.stdout + added.stderr
    ran = inflow(env, "imports", "run", f"ltv-{unique}")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    (msg,) = consume_n(consumer_factory([catalogue_topics.topic("ingest.records")]), 1)
    record = AvroSerde().decode(msg.value())[1]
    assert record["customer_id"] == "u1" and record["source"] == "s3_import"
    assert json.loads(record["attributes_json"]) == {
        "u_fn": "Ann",
        "cr_t": "2024-01-02T03:04:05+00:00",
        "t_rev": 1234.5,
        "installed": True,
    }

    aux = tmp_path / "aux.yaml"
    aux_def = base(
        s3_settings,
        bucket,
        name=f"aux-{unique}",
        type="aux_data",
        file_prefix="stores",
        folder="aux",
        mappings=[{"column": "store", "moe_attr": "uid"}, {"column": "city", "moe_attr": "city"}],
    )
    aux.write_text(yaml.safe_dump(aux_def))
    put("aux/stores_20240101.csv", "store,city\ns1,Pune\ns2,Oslo\n")
    assert inflow(env, "imports", "add", str(aux)).returncode == 0
    ran = inflow(env, "imports", "run", f"aux-{unique}")
    assert ran.returncode == 0 and "stores_20240101.csv: SUCCESSFUL" in ran.stdout, ran.stdout + ran.stderr
    got = inflow(env, "aux", "get", "WS1", "s2")
    assert got.returncode == 0, got.stdout + got.stderr
    item = json.loads(got.stdout)
    assert (item["key"], item["attributes"], item["origin"]) == (
        "s2",
        {"city": "Oslo"},
        f"aux-{unique}/stores_20240101.csv/2",
    )
    missing = inflow(env, "aux", "get", "WS1", "s9")
    assert missing.returncode == 1 and "no auxiliary data with key 's9'" in missing.stdout

    shown = json.loads(inflow(env, "imports", "show", f"aux-{unique}", "--json").stdout)
    (file,) = shown["files"]
    assert (file["type"], file["aux_data_added_count"], file["aux_data_failed_count"]) == ("AUX_DATA", 2, 0)

    resource = ConfigResource(ConfigResource.Type.TOPIC, catalogue_topics.topic("ingest.aux"))
    config = admin.describe_configs([resource])[resource].result()
    assert config["cleanup.policy"].value == "compact"
