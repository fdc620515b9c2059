"""Key hashing and the Basic Auth header parsing."""

from __future__ import annotations

import base64

import pytest

from inflow.producers.bulk_api.auth import credentials
from inflow.producers.bulk_api.exceptions import ApiError
from inflow.workspaces.keys import generate_key, hash_key, verify_key


def test_keys_are_stored_salted_and_verified():
    key = generate_key()
    first, second = hash_key(key, n=2**10), hash_key(key, n=2**10)
    assert first != second and key not in first and first.startswith("scrypt$n=1024,r=8,p=1$")
    assert verify_key(key, first) and verify_key(key, second)
    assert not verify_key(key + "x", first)


@pytest.mark.parametrize(
    "stored",
    ["", "plain", "md5$n=1,r=1,p=1$AA==$AA==", "scrypt$n=x$AA==$AA==", "scrypt$n=1024,r=8,p=1$!!$AA=="],
)
def test_malformed_stored_hashes_never_verify(stored):
    assert not verify_key("k", stored)


def test_credentials_split_on_the_first_colon():
    header = "Basic " + base64.b64encode(b"WS:key:with:colons").decode()
    assert credentials(header) == ("WS", "key:with:colons")


def test_non_utf8_credentials_are_an_identity_error():
    with pytest.raises(ApiError) as exc:
        credentials("Basic " + base64.b64encode(b"\xff\xfe:\xff").decode())
    assert exc.value.status == 401 and exc.value.message == "Invalid identity information found"
