"""OAuth 2.0 client credentials (MoEngage Streams §5.2) against a real local token endpoint and receiver."""

from __future__ import annotations

import base64
import json

import pytest

from inflow.schemas.serde import AvroSerde
from inflow.sinks.streams.definitions import StreamAuth
from inflow.sinks.streams.destinations.oauth import parse_token
from inflow.sinks.streams.dlq import read_dlq
from inflow.sinks.streams.exceptions import TokenUnavailable
from tests.streams.conftest import SinkThread, enriched, invoke, stream
from tests.streams.endpoint import TokenEndpoint
from tests.support import consume_n, wait_for


@pytest.fixture
def token_factory():
    made: list[TokenEndpoint] = []

    def make(**kwargs) -> TokenEndpoint:
        ep = TokenEndpoint(**kwargs).start()
        made.append(ep)
        return ep

    yield make
    for ep in made:
        ep.stop()


def oauth(token: TokenEndpoint, **extra) -> dict:
    return {
        "type": "oauth2",
        "token_url": token.url,
        "client_id": "cid",
        "client_secret": "c-secret-1",
    } | extra


def tokens_seen(ep) -> list[str]:
    return [r.headers.get("Authorization", "") for r in ep.snapshot()]


def test_the_token_is_fetched_once_and_used_for_every_batch(
    writer, endpoint_factory, sink_factory, token_factory
):
    token = token_factory()
    ep = endpoint_factory()
    sink_factory(stream(ep.url, batch_size=5, auth=oauth(token, scope="events:write")))
    sent = set(writer.write([enriched(uid=f"u-{i}") for i in range(40)]))
    wait_for(lambda: ep.delivered_uuids() == sent, 60, what="every event delivered")
    assert len(ep.snapshot()) >= 8  # batches of 5
    assert set(tokens_seen(ep)) == {"Bearer tok-1"}
    assert token.calls() == 1
    [request] = token.requests
    assert request["form"] == {"grant_type": "client_credentials", "scope": "events:write"}
    assert request["authorization"] == "Basic " + base64.b64encode(b"cid:c-secret-1").decode()


def test_client_credentials_in_the_body_when_asked(writer, endpoint_factory, sink_factory, token_factory):
    token = token_factory()
    ep = endpoint_factory()
    sink_factory(stream(ep.url, auth=oauth(token, client_auth="body")))
    sent = set(writer.write([enriched()]))
    wait_for(lambda: ep.delivered_uuids() == sent, 60, what="the event delivered")
    [request] = token.requests
    assert request["authorization"] is None
    assert request["form"] == {
        "grant_type": "client_credentials",
        "client_id": "cid",
        "client_secret": "c-secret-1",
    }


def test_the_token_is_refreshed_before_it_expires(writer, endpoint_factory, sink_factory, token_factory):
    token = token_factory(expires_in=4)  # refreshed once 90% of its lifetime has passed
    ep = endpoint_factory()
    sink_factory(stream(ep.url, auth=oauth(token)))

    def second_token_used() -> bool:
        writer.write([enriched()])
        return "Bearer tok-2" in tokens_seen(ep)

    wait_for(second_token_used, 60, interval=0.5, what="a request with a refreshed token")
    assert tokens_seen(ep)[0] == "Bearer tok-1"
    assert token.calls() < len(ep.snapshot())  # a token per lifetime, not per batch


def test_a_401_fetches_a_new_token_and_sends_the_batch_again(
    writer, endpoint_factory, sink_factory, token_factory
):
    token = token_factory()
    revoked = "Bearer tok-1"
    ep = endpoint_factory(decide=lambda index, body: 401 if index == 0 else 200)
    sink_factory(stream(ep.url, auth=oauth(token)))
    sent = set(writer.write([enriched() for _ in range(3)]))
    wait_for(lambda: ep.delivered_uuids() == sent, 60, what="delivery with a new token")
    first, second = ep.snapshot()[:2]
    assert (first.status, first.headers["Authorization"]) == (401, revoked)
    assert (second.status, second.headers["Authorization"]) == (200, "Bearer tok-2")
    assert first.body["moe_request_id"] == second.body["moe_request_id"]  # the same request, at once
    assert token.calls() == 2


def test_a_failing_token_endpoint_takes_the_retry_path(
    writer, endpoint_factory, sink_factory, token_factory, catalogue_topics, consumer_factory
):
    token = token_factory(statuses=[500, 503])
    ep = endpoint_factory()
    sink_factory(stream(ep.url, auth=oauth(token), retry_delays_s=[0.5, 0.5]))
    sent = set(writer.write([enriched() for _ in range(3)]))
    wait_for(lambda: ep.delivered_uuids() == sent, 60, what="delivery once the token endpoint recovers")
    assert token.calls() == 3
    parked = consume_n(consumer_factory([catalogue_topics.topic("streams.retry.30s")]), 1)
    _, record = AvroSerde().decode(parked[0].value(), "StreamBatch")
    assert record["attempts"][0]["error"].startswith("token endpoint http://127.0.0.1:")
    assert "HTTP 500" in record["attempts"][0]["error"]


def test_a_token_endpoint_that_never_answers_a_token_dead_letters_the_batch(
    writer, endpoint_factory, sink_factory, token_factory, catalogue_topics
):
    token = token_factory(statuses=[500] * 100)
    ep = endpoint_factory()
    sink_factory(stream(ep.url, auth=oauth(token), retry_delays_s=[0.2]))
    sent = set(writer.write([enriched() for _ in range(2)]))
    [dead] = wait_for(
        lambda: read_dlq(catalogue_topics, AvroSerde(), "s1", 10) or None, 60, what="the DLQ entry"
    )
    assert set(dead.record["event_uuids"]) == sent
    assert all("token endpoint" in a["error"] and "HTTP 500" in a["error"] for a in dead.record["attempts"])
    assert ep.snapshot() == []  # never sent without a token
    assert "c-secret-1" not in json.dumps(dead.detail(), default=str)


def test_the_client_secret_is_encrypted_at_rest_and_masked(
    cli_env, catalogue_topics, consumer_factory, token_factory, endpoint_factory
):
    token = token_factory()
    ep = endpoint_factory()
    invoke(
        cli_env,
        "streams",
        "add",
        "oauth-s",
        "--url",
        ep.url,
        "--auth",
        "oauth2",
        "--token-url",
        token.url,
        "--client-id",
        "cid",
        "--client-secret",
        "c-secret-1",
        "--linger",
        "0.2",
    )
    [msg] = consume_n(consumer_factory([catalogue_topics.topic("control.streams")]), 1)
    assert b"c-secret-1" not in msg.value()
    _, record = AvroSerde().decode(msg.value(), "StreamDefinition")
    assert json.loads(record["definition_json"])["auth"]["client_secret"].startswith("enc:v1:")
    shown = invoke(cli_env, "streams", "show", "oauth-s").output
    assert "c-secret-1" not in shown and '"client_secret": "**********"' in shown
    from inflow.config.secrets import SecretBox

    runner = SinkThread(catalogue_topics, [], SecretBox(cli_env["INFLOW_SECRET_KEY"].encode())).start()
    try:
        wait_for(lambda: "oauth-s" in runner.sink.running, 30, what="the stream started")
        from tests.streams.conftest import EventWriter

        sent = set(EventWriter(catalogue_topics).write([enriched()]))
        wait_for(lambda: ep.delivered_uuids() == sent, 60, what="delivery with the decrypted secret")
        assert token.requests[0]["authorization"] == "Basic " + base64.b64encode(b"cid:c-secret-1").decode()
    finally:
        runner.stop()


def test_oauth_definitions_are_checked():
    with pytest.raises(ValueError, match="oauth2 auth needs token_url, client_id and client_secret"):
        StreamAuth.model_validate({"type": "oauth2", "token_url": "http://127.0.0.1:9/t", "client_id": "c"})
    with pytest.raises(ValueError, match="only for oauth2"):
        StreamAuth.model_validate({"type": "none", "client_id": "c"})
    with pytest.raises(ValueError, match="token_url must be an http"):
        StreamAuth.model_validate(
            {"type": "oauth2", "token_url": "ftp://h/t", "client_id": "c", "client_secret": "s"}
        )
    with pytest.raises(ValueError, match="169.254"):
        StreamAuth.model_validate(
            {
                "type": "oauth2",
                "token_url": "http://169.254.169.254/t",
                "client_id": "c",
                "client_secret": "s",
            }
        )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"token_type":"Bearer"}', "no usable access_token"),
        (b'{"access_token":"a\\r\\nX: y"}', "no usable access_token"),
        (b'{"access_token":"a","token_type":"mac"}', "is not Bearer"),
        (b'{"access_token":"a","expires_in":"soon"}', "is not a number"),
    ],
)
def test_bad_token_answers_are_refused_with_the_reason(body, reason):
    with pytest.raises(TokenUnavailable, match=reason):
        parse_token(body, "http://t")


def test_a_token_answer_without_expiry_lasts_an_hour():
    assert parse_token(b'{"access_token":"a","token_type":"bearer"}', "http://t") == ("a", 3600.0)
