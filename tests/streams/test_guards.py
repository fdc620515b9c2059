"""Pure guards of the sink against hostile definitions: outbound address policy, CR/LF, secrets at rest and
masked everywhere. No traffic leaves this machine: the only name resolved is ``localhost``."""

from __future__ import annotations

import asyncio
import json

import pytest
from cryptography.fernet import Fernet

from inflow.config.secrets import SecretBox
from inflow.sinks.streams.addresses import AddressRefused, GuardedResolver, decide, literal_host_verdict
from inflow.sinks.streams.cli import config_sections
from inflow.sinks.streams.definitions import StreamDefinition, parse_definition
from inflow.sinks.streams.destinations.registry import open_destination
from inflow.sinks.streams.exceptions import StreamDefinitionError
from inflow.sinks.streams.redact import Redactor, mask_url
from inflow.sinks.streams.settings import SinkSettings

DEFAULT = SinkSettings()


@pytest.mark.parametrize(
    ("address", "allowed", "why"),
    [
        ("169.254.169.254", False, "link-local / cloud metadata"),
        ("169.254.1.7", False, "link-local"),
        ("fd00:ec2::254", False, "cloud metadata"),
        ("fe80::1", False, "link-local"),
        ("fe80::1%eth0", False, "link-local"),
        ("::ffff:169.254.169.254", False, "link-local / cloud metadata"),
        ("0.0.0.0", False, "unspecified"),
        ("224.0.0.1", False, "multicast"),
        ("10.1.2.3", True, ""),
        ("172.16.0.9", True, ""),
        ("192.168.1.1", True, ""),
        ("127.0.0.1", True, ""),
        ("::1", True, ""),
        ("fd00:ec2::253", True, ""),
        ("not-an-ip", False, "not an IP address"),
    ],
)
def test_the_address_policy_refuses_link_local_and_metadata_and_allows_private_ranges(address, allowed, why):
    verdict = decide(address, DEFAULT)
    assert verdict.allowed is allowed
    assert why in verdict.reason


def test_deny_and_allow_lists_from_the_environment(monkeypatch):
    monkeypatch.setenv("INFLOW_SINK_DENY_NETWORKS", "127.0.0.0/8, ::1")
    monkeypatch.setenv("INFLOW_SINK_ALLOW_NETWORKS", "10.0.0.0/8,127.0.0.0/8")
    settings = SinkSettings()
    refused = decide("127.0.0.1", settings)
    assert not refused.allowed and "INFLOW_SINK_DENY_NETWORKS" in refused.reason  # deny wins over allow
    assert decide("10.9.9.9", settings).allowed
    outside = decide("192.168.1.1", settings)
    assert not outside.allowed and "INFLOW_SINK_ALLOW_NETWORKS" in outside.reason
    # An allow list never lifts the built-in refusals.
    assert not decide("169.254.169.254", SinkSettings(allow_networks="169.254.0.0/16")).allowed
    with pytest.raises(ValueError, match="networks"):
        SinkSettings(deny_networks="10.0.0.0/33")


def test_literal_hosts_are_judged_and_host_names_left_to_the_resolver():
    deny = SinkSettings(deny_networks="127.0.0.0/8")
    assert not literal_host_verdict("http://127.0.0.1:8080/x", deny).allowed
    assert not literal_host_verdict("http://[fd00:ec2::254]/latest", DEFAULT).allowed
    assert literal_host_verdict("http://localhost:8080/x", deny).allowed  # checked once resolved
    assert literal_host_verdict("http://127.0.0.1:8080/x", DEFAULT).allowed


def test_the_resolver_checks_every_resolved_address_before_any_connection():
    async def resolve(settings: SinkSettings) -> list[str]:
        resolver = GuardedResolver(settings)
        try:
            return [r["host"] for r in await resolver.resolve("localhost", 80, 0)]
        finally:
            await resolver.close()

    assert "127.0.0.1" in asyncio.run(resolve(DEFAULT))
    with pytest.raises(AddressRefused, match="127.0.0.1 is refused"):
        asyncio.run(resolve(SinkSettings(deny_networks="127.0.0.0/8,::1")))


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data", "http://[fd00:ec2::254]/", "http://[fe80::1]/x"]
)
def test_a_stream_to_a_metadata_or_link_local_address_is_refused_when_defined(url):
    with pytest.raises(StreamDefinitionError, match="refused"):
        parse_definition({"id": "s", "url": url}, "streams[0]")


def test_a_refused_address_from_the_settings_refuses_the_destination():
    d = StreamDefinition.model_validate({"id": "s", "url": "http://127.0.0.1:9/x"})
    with pytest.raises(StreamDefinitionError, match="INFLOW_SINK_DENY_NETWORKS"):
        open_destination(d, None, SinkSettings(deny_networks="127.0.0.0/8"))
    open_destination(d, None, DEFAULT)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"headers": {"X-A": "v\r\nX-Injected: 1"}}, "header 'X-A' contains CR, LF"),
        ({"headers": {"X-A": "v\nw"}}, "header 'X-A' contains CR, LF"),
        ({"headers": {"X-A": "v\x00"}}, "header 'X-A' contains CR, LF"),
        ({"headers": {"X-A\r\nX-B": "v"}}, "must be an HTTP token"),
        ({"headers": {"X A": "v"}}, "must be an HTTP token"),
        (
            {"auth": {"type": "header", "header_name": "X-Api-Key", "header_value": "k\r\nX-Evil: 1"}},
            "header 'X-Api-Key' contains CR, LF",
        ),
        ({"auth": {"type": "header", "header_name": "X:Y", "header_value": "k"}}, "HTTP token"),
        ({"url": "http://h/x\r\nHost: evil"}, "control characters"),
        ({"url": "http://h/x\ty"}, "control characters"),
    ],
)
def test_control_characters_in_headers_and_urls_are_refused_without_echoing_the_value(data, message):
    with pytest.raises(StreamDefinitionError) as caught:
        parse_definition({"id": "s", "url": "http://h/x"} | data, "streams[0]")
    assert message in str(caught.value)
    assert "Injected" not in str(caught.value) and "Evil" not in str(caught.value)


def test_stored_form_encrypts_url_headers_and_auth_and_plain_records_are_still_read():
    box = SecretBox(Fernet.generate_key())
    d = StreamDefinition.model_validate(
        {
            "id": "s",
            "url": "https://u:url-pass@h/p?token=tok-secret",
            "headers": {"X-Static": "static-secret"},
            "auth": {"type": "basic", "username": "ws", "password": "pw-secret"},
        }
    )
    stored = d.stored(box)
    text = json.dumps(stored)
    for secret in ("tok-secret", "url-pass", "static-secret", "pw-secret", "h/p"):
        assert secret not in text
    assert stored["url"].startswith("enc:v1:") and stored["headers"]["X-Static"].startswith("enc:v1:")
    sealed = StreamDefinition.model_validate(stored)
    plain = sealed.revealed(box)
    assert plain.url == d.url
    assert plain.request_headers()["X-Static"] == "static-secret"
    # A record written before secrets were encrypted is read as it is.
    legacy = StreamDefinition.model_validate(json.loads(d.model_dump_json()) | {"headers": {"X-Static": "v"}})
    assert legacy.revealed(box).request_headers()["X-Static"] == "v"


def test_secrets_under_another_key_or_with_cr_lf_fail_to_reveal_with_the_reason_only():
    box = SecretBox(Fernet.generate_key())
    other = SecretBox(Fernet.generate_key())
    d = StreamDefinition.model_validate({"id": "s", "url": "http://h/x?token=tok-secret"})
    sealed = StreamDefinition.model_validate(d.stored(other))
    with pytest.raises(StreamDefinitionError, match="url: stored secret cannot be decrypted") as caught:
        open_destination(sealed, box)
    assert "tok-secret" not in str(caught.value)
    # A header value with CR/LF encrypted before such values were refused is refused once decrypted.
    bad = {"id": "s", "url": "http://h/x", "headers": {"X-A": box.encrypt("v\r\nX-Injected: 1")}}
    with pytest.raises(StreamDefinitionError, match="header 'X-A' contains CR, LF") as caught:
        StreamDefinition.model_validate(bad).revealed(box)
    assert "Injected" not in str(caught.value)


def test_urls_are_masked_for_logs_and_listings():
    assert mask_url("https://h/p?token=abc") == "https://h/p?token=***"
    assert mask_url("https://user:pw@h:8443/p?a=1&b=") == "https://user:***@h:8443/p?a=***&b=***"
    assert mask_url("https://h/p") == "https://h/p"
    assert mask_url("https://h/p?token=abc", "**********") == "https://h/p?token=**********"
    assert mask_url("enc:v1:gAAAA") == "***"
    redact = Redactor("https://u:pw-1234@h/p?token=abcdef", ["hdr-secret"])
    text = redact("failed https://u:pw-1234@h/p?token=abcdef; echo abcdef hdr-secret")
    assert text == "failed https://u:***@h/p?token=***; echo *** ***"


def test_public_form_masks_every_secret():
    d = StreamDefinition.model_validate(
        {
            "id": "s",
            "url": "https://u:url-pass@h/p?token=tok-secret&k=v",
            "headers": {"X-Static": "static-secret"},
            "auth": {"type": "header", "header_name": "X-Api-Key", "header_value": "api-secret"},
        }
    )
    shown = d.public()
    text = json.dumps(shown)
    for secret in ("tok-secret", "url-pass", "static-secret", "api-secret"):
        assert secret not in text
    assert shown["url"] == "https://u:**********@h/p?token=**********&k=**********"
    assert shown["headers"] == {"X-Static": "**********"}
    assert shown["auth"]["header_value"] == "**********" and shown["auth"]["header_name"] == "X-Api-Key"


def test_config_sections_validates_entries_and_masks_secrets():
    entries = [
        {
            "id": "a",
            "url": "https://h/p?token=tok-secret",
            "headers": {"X-Static": "static-secret"},
            "auth": {"type": "basic", "username": "ws", "password": "pw-secret"},
        },
        {"id": "b", "url": "http://h2/x", "batch_size": 10},
    ]
    sections = config_sections(entries)
    assert json.loads(json.dumps(sections)) == sections  # JSON-able
    text = json.dumps(sections)
    for secret in ("tok-secret", "static-secret", "pw-secret"):
        assert secret not in text
    assert sections[0]["url"] == "https://h/p?token=**********"
    assert sections[0]["auth"] == {"type": "basic", "username": "ws", "password": "**********"}
    assert sections[0]["headers"] == {"X-Static": "**********"}
    assert sections[1]["batch_size"] == 10 and sections[1]["retry_delays_s"] == [30, 60, 120]
    with pytest.raises(StreamDefinitionError, match=r"streams\[1\]: unknown key 'colour'"):
        config_sections([entries[0], {"id": "b", "url": "http://h", "colour": "red"}])
    with pytest.raises(StreamDefinitionError, match=r"streams\[1\]: headers"):
        config_sections([entries[0], {"id": "b", "url": "http://h", "headers": {"X": "a\r\nb"}}])
    with pytest.raises(StreamDefinitionError, match="defined twice"):
        config_sections([entries[1], entries[1]])
