"""`inflow streams ...` commands against the real broker, and a running sink picking up a CLI-added stream."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet

from inflow.cli import app
from inflow.schemas.serde import AvroSerde
from inflow.sinks.streams import cli as streams_cli
from inflow.sinks.streams.control import ControlView, read_control
from inflow.sinks.streams.exceptions import DlqError, StreamDefinitionError, UnknownStreamError
from tests.streams.conftest import SinkThread, enriched, invoke
from tests.support import consume_n, wait_for

if not any(getattr(g, "name", None) == "streams" for g in app.registered_groups):
    streams_cli.register(app)


def test_add_stores_secrets_encrypted_and_list_show_mask_them(cli_env, catalogue_topics, consumer_factory):
    invoke(
        cli_env,
        "streams",
        "add",
        "crm",
        "--url",
        "https://api.example.com/events?k=v",
        "--auth",
        "basic",
        "--username",
        "ws",
        "--password",
        "hunter2-secret",
        "--events",
        "Purchase,MOE_EMAIL_SENT",
        "--header",
        "header1: value1",
        "--app-name",
        "Shop",
    )
    [msg] = consume_n(consumer_factory([catalogue_topics.topic("control.streams")]), 1)
    assert b"hunter2-secret" not in msg.value()
    _, record = AvroSerde().decode(msg.value(), "StreamDefinition")
    assert '"password": "enc:v1:' in record["definition_json"]
    listed = invoke(cli_env, "streams", "list").output
    assert "crm" in listed and "stored" in listed and "running" in listed
    shown = invoke(cli_env, "streams", "show", "crm").output
    assert "hunter2-secret" not in shown and "**********" in shown and "Purchase" in shown
    again = invoke(cli_env, "streams", "add", "crm", "--url", "http://x", ok=False)
    assert isinstance(again.exception, StreamDefinitionError) and "--replace" in str(again.exception)


def test_add_rejects_bad_definitions_with_the_reason(cli_env):
    bad_url = invoke(cli_env, "streams", "add", "x", "--url", "ftp://host/file", ok=False)
    assert isinstance(bad_url.exception, StreamDefinitionError) and "http(s) URL" in str(bad_url.exception)
    half_auth = invoke(
        cli_env, "streams", "add", "x", "--url", "http://h", "--auth", "basic", "--username", "u", ok=False
    )
    assert "basic auth needs username and password" in str(half_auth.exception)
    unknown = invoke(cli_env, "streams", "show", "nope", ok=False)
    assert isinstance(unknown.exception, UnknownStreamError)


def test_pause_and_resume_write_the_stream_state(cli_env, catalogue_topics):
    invoke(cli_env, "streams", "add", "s", "--url", "http://127.0.0.1:9/x")
    invoke(cli_env, "streams", "pause", "s", "--mode", "resume")
    view = read_control(catalogue_topics, AvroSerde(), ControlView())
    assert view.states["s"]["paused"] is True and view.states["s"]["mode"] == "resume"
    assert "paused (resume)" in invoke(cli_env, "streams", "list").output
    again = invoke(cli_env, "streams", "pause", "s", ok=False)
    assert "already paused" in str(again.exception)
    invoke(cli_env, "streams", "resume", "s")
    view = read_control(catalogue_topics, AvroSerde(), ControlView())
    assert view.states["s"]["paused"] is False and view.states["s"]["paused_at"] is not None
    not_paused = invoke(cli_env, "streams", "resume", "s", ok=False)
    assert "is not paused" in str(not_paused.exception)


def test_a_running_sink_picks_up_a_cli_added_stream_with_basic_auth_and_the_dlq_commands_work(
    cli_env, catalogue_topics, writer, endpoint_factory, monkeypatch
):
    from inflow.config.secrets import SecretBox

    ep = endpoint_factory(default=500)
    box = SecretBox(cli_env["INFLOW_SECRET_KEY"].encode())
    runner = SinkThread(catalogue_topics, [], box).start()
    try:
        invoke(
            cli_env,
            "streams",
            "add",
            "live",
            "--url",
            ep.url,
            "--auth",
            "basic",
            "--username",
            "ws",
            "--password",
            "pw",
            "--retry-delays",
            "0.5",
            "--linger",
            "0.2",
        )
        sent = writer.write([enriched() for _ in range(3)])
        wait_for(lambda: len(ep.snapshot()) >= 2, 60, what="first attempt and one retry")
        assert ep.snapshot()[0].headers["Authorization"] == "Basic " + base64.b64encode(b"ws:pw").decode()
        listed = wait_for(
            lambda: "1 dead batches" in (out := invoke(cli_env, "streams", "dlq", "list").output) and out,
            60,
            interval=0.5,
            what="the batch in the DLQ",
        )
        assert "live" in listed and "HTTP 500" in listed
        request_id = ep.snapshot()[0].body["moe_request_id"]
        shown = invoke(cli_env, "streams", "dlq", "show", request_id).output
        assert all(u in shown for u in sent) and shown.count('"status": 500') == 2
        missing = invoke(cli_env, "streams", "dlq", "redrive", ok=False)
        assert isinstance(missing.exception, DlqError)
        ep.default = 200
        out = invoke(cli_env, "streams", "dlq", "redrive", request_id).output
        assert "1 batches redriven" in out
        wait_for(lambda: ep.delivered_uuids() == set(sent), 60, what="redriven delivery")
    finally:
        runner.stop()


def test_remove_stops_a_cli_added_stream_in_a_running_sink(cli_env, catalogue_topics, endpoint_factory):
    from inflow.config.secrets import SecretBox

    ep = endpoint_factory()
    runner = SinkThread(catalogue_topics, [], SecretBox(cli_env["INFLOW_SECRET_KEY"].encode())).start()
    try:
        invoke(cli_env, "streams", "add", "gone", "--url", ep.url)
        wait_for(lambda: "gone" in runner.sink.running, 30, what="the stream started")
        invoke(cli_env, "streams", "remove", "gone")
        wait_for(lambda: "gone" not in runner.sink.running, 30, what="the stream stopped")
        assert "gone" not in invoke(cli_env, "streams", "list").output
        missing = invoke(cli_env, "streams", "remove", "gone", ok=False)
        assert isinstance(missing.exception, UnknownStreamError)
    finally:
        runner.stop()


def test_add_refuses_cr_lf_and_refused_addresses_with_a_clear_error(cli_env):
    header_auth = ("--auth", "header", "--auth-header", "X-Api-Key")
    crlf_auth = invoke(
        cli_env,
        "streams",
        "add",
        "x",
        "--url",
        "http://h/x",
        *header_auth,
        "--auth-value",
        "k\r\nX-Evil: 1",
        ok=False,
    )
    assert isinstance(crlf_auth.exception, StreamDefinitionError)
    assert "header 'X-Api-Key' contains CR, LF" in str(crlf_auth.exception)
    assert "X-Evil" not in str(crlf_auth.exception)
    crlf_header = invoke(
        cli_env, "streams", "add", "x", "--url", "http://h/x", "--header", "X-A: a\r\nb", ok=False
    )
    assert "header 'X-A' contains CR, LF" in str(crlf_header.exception)
    crlf_url = invoke(cli_env, "streams", "add", "x", "--url", "http://h/x\r\nHost: evil", ok=False)
    assert "control characters" in str(crlf_url.exception)
    metadata = invoke(cli_env, "streams", "add", "x", "--url", "http://169.254.169.254/latest", ok=False)
    assert isinstance(metadata.exception, StreamDefinitionError) and "refused" in str(metadata.exception)
    denied = invoke(
        cli_env | {"INFLOW_SINK_DENY_NETWORKS": "127.0.0.0/8"},
        "streams",
        "add",
        "x",
        "--url",
        "http://127.0.0.1:9/x",
        ok=False,
    )
    assert "INFLOW_SINK_DENY_NETWORKS" in str(denied.exception)
    assert "x" not in invoke(cli_env, "streams", "list").output.split()


def test_list_show_and_status_mask_url_tokens_and_passwords(cli_env, catalogue_topics, consumer_factory):
    url = "https://user:url-pass-1@api.example.com/in?token=tok-cli-1&k=v"
    invoke(cli_env, "streams", "add", "masked", "--url", url, "--header", "X-Static: static-cli-1")
    [msg] = consume_n(consumer_factory([catalogue_topics.topic("control.streams")]), 1)
    for secret in (b"url-pass-1", b"tok-cli-1", b"static-cli-1", b"api.example.com"):
        assert secret not in msg.value()  # URL and header values encrypted at rest
    outputs = [
        invoke(cli_env, "streams", command, *args).output
        for command, *args in (("list",), ("show", "masked"), ("status",))
    ]
    text = "".join(outputs)
    for secret in ("url-pass-1", "tok-cli-1", "static-cli-1"):
        assert secret not in text
    assert "token=**********" in outputs[1] and "user:**********@api.example.com" in outputs[1]
    assert "masked: running" in outputs[2]


def test_a_stream_whose_secrets_do_not_decrypt_is_held_alone_and_status_says_why(
    cli_env, catalogue_topics, writer, endpoint_factory, caplog
):
    from inflow.config.secrets import SecretBox
    from inflow.sinks.streams.control import DEFINITIONS_TOPIC, definition_record, publish
    from inflow.sinks.streams.definitions import StreamDefinition

    def store(stream_id: str, data: dict) -> None:
        record = definition_record(stream_id, data)
        publish(
            catalogue_topics, DEFINITIONS_TOPIC, stream_id, AvroSerde().encode("StreamDefinition", record)
        )

    locked_ep, open_ep, legacy_ep = endpoint_factory(), endpoint_factory(), endpoint_factory()
    box = SecretBox(cli_env["INFLOW_SECRET_KEY"].encode())
    other_key = SecretBox(Fernet.generate_key())  # the key was rotated since "locked" was stored
    locked = StreamDefinition.model_validate(
        {
            "id": "locked",
            "url": locked_ep.url + "?token=tok-locked-1",
            "auth": {"type": "header", "header_name": "X-Api-Key", "header_value": "locked-secret"},
        }
    )
    store("locked", locked.stored(other_key))
    # Stored in clear before secrets were encrypted: still read.
    store(
        "legacy",
        {
            "id": "legacy",
            "url": legacy_ep.url,
            "linger_s": 0.2,
            "start_at": "2000-01-01T00:00:00Z",
            "auth": {"type": "basic", "username": "ws", "password": "plain-pw"},
        },
    )
    invoke(cli_env, "streams", "add", "open", "--url", open_ep.url, "--linger", "0.2")
    runner = SinkThread(catalogue_topics, [], box).start()
    try:
        sent = writer.write([enriched() for _ in range(3)])
        wait_for(
            lambda: open_ep.delivered_uuids() == set(sent) == legacy_ep.delivered_uuids(),
            60,
            what="the other streams' delivery",
        )
        expected = "Basic " + base64.b64encode(b"ws:plain-pw").decode()
        assert legacy_ep.snapshot()[0].headers["Authorization"] == expected
        reason = wait_for(lambda: runner.sink.held.get("locked"), 30, what="the locked stream held")
        assert "cannot be decrypted" in reason and "INFLOW_SECRET_KEY" in reason
        assert locked_ep.snapshot() == []
        status = invoke(cli_env, "streams", "status").output
        assert "locked: held: stream locked: url: stored secret cannot be decrypted" in status
        assert "open: running" in status and "legacy: running" in status
        assert "held, not delivering" in caplog.text and "locked" in caplog.text
        assert "held" in invoke(cli_env, "streams", "list").output
        for secret in ("tok-locked-1", "locked-secret", "plain-pw"):
            assert secret not in status + caplog.text
    finally:
        runner.stop()
