"""Preview ("Fetch file") with MoEngage's errors, and definitions durable in the control topic."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from inflow.config.secrets import SecretBox
from inflow.config.settings import KafkaSettings
from inflow.producers.s3_import.exceptions import DefinitionError, FetchError, FileFormatError
from inflow.producers.s3_import.preview import preview
from inflow.producers.s3_import.store import DefinitionStore
from inflow.schemas.serde import AvroSerde
from tests.s3_import.pgp_keys import GpgWorkbench, KeyPair
from tests.support import consume_until_quiet

ROWS = "ID,First Name\n" + "".join(f"u{i},N{i}\n" for i in range(1, 9))


def test_preview_top_five_rows_of_the_most_recent_file(
    definition: Callable[..., Any], put: Callable[..., None]
) -> None:
    d = definition()
    put("in/users/registered_user_data_20240101.csv", "ID,Old\nx,y\n")
    put("in/users/registered_user_data_20240102.csv", ROWS)
    put("in/users/notes.txt", "ignored")
    result = preview(d)
    assert result.file_name == "registered_user_data_20240102.csv"
    assert result.columns == ["ID", "First Name"]
    assert result.samples == {"ID": "u1", "First Name": "N1"}
    assert result.rows == [[f"u{i}", f"N{i}"] for i in range(1, 6)]


def test_preview_ndjson_and_encrypted(
    definition: Callable[..., Any], put: Callable[..., None], gpg: GpgWorkbench, keys: dict[str, KeyPair]
) -> None:
    nd = definition(folder="nd", file_format="ndjson")
    put("nd/registered_user_data_20240101.json", '{"ID": "u1", "p": {"a": 1}}\n{"ID": "u2"}\n')
    result = preview(nd)
    assert result.columns == ["ID", "p", "p.a"] and result.samples == {"ID": "u1", "p": {"a": 1}, "p.a": 1}
    alice = keys["alice"]
    enc = definition(
        name="enc",
        folder="enc",
        encrypted=True,
        pgp={"decryption_key": alice.private, "passphrase": alice.passphrase},
    )
    put("enc/registered_user_data_20240101.csv.asc", gpg.encrypt(ROWS.encode(), alice))
    assert preview(enc).rows[4] == ["u5", "N5"]


def test_preview_errors_are_moengages(definition: Callable[..., Any], put: Callable[..., None]) -> None:
    with pytest.raises(FetchError) as info:
        preview(definition(secret_key="wrong-secret"))
    assert str(info.value) == "Given S3 Access Key is not valid"
    with pytest.raises(FetchError) as info:
        preview(definition(access_key="NOSUCHKEY"))
    assert str(info.value) == "Given S3 Access Key is not valid"
    with pytest.raises(FetchError) as info:
        preview(definition(folder="no/such/folder"))
    assert str(info.value) == "Please check the folder path and try again"
    with pytest.raises(FetchError) as info:
        preview(definition(bucket="no-such-bucket-inflow"))
    assert str(info.value) == "Please check the folder path and try again"
    put("in/users/registered_user_data_20240101.csv", "ID,First Name\n")
    with pytest.raises(FileFormatError) as zero:
        preview(definition())
    assert str(zero.value) == "Found zero data rows in the file"


def test_definition_store_add_duplicate_archive_and_secrets_at_rest(
    definition: Callable[..., Any],
    catalogue_topics: KafkaSettings,
    box: SecretBox,
    consumer_factory: Callable[..., Any],
    unique: str,
) -> None:
    serde = AvroSerde()
    store = DefinitionStore(catalogue_topics, serde, box)
    d = definition(name=f"a-{unique}")
    stored = store.put(d)
    assert stored.created_at is not None
    with pytest.raises(DefinitionError, match="An import with the same import name has already been used"):
        store.put(d)
    with pytest.raises(DefinitionError, match=f"duplicate of import a-{unique}"):
        store.put(definition(name=f"b-{unique}"))
    store.archive(d.name)
    store.put(definition(name=f"b-{unique}"))  # an archived import no longer blocks its folder

    fresh = DefinitionStore(catalogue_topics, serde, box)  # another process rebuilds from the topic
    assert fresh.get(d.name).archived and not fresh.get(f"b-{unique}").archived
    assert fresh.get(d.name).secret_key.get_secret_value() == d.secret_key.get_secret_value()
    with pytest.raises(DefinitionError, match="no import named 'zzz'"):
        fresh.get("zzz")
    raw = consume_until_quiet(consumer_factory([catalogue_topics.topic("control.imports")]), quiet=2)
    assert len(raw) == 3
    for msg in raw:
        record = serde.decode(msg.value(), expected="ImportDefinition")[1]
        assert d.secret_key.get_secret_value() not in record["definition_json"]
        assert '"secret_key": "enc:v1:' in record["definition_json"]
