"""Unit tests of the sans-I/O protocol core: parsing, errors, close codes, encoding and framing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from wsproto.frame_protocol import FrameProtocol, Opcode

from tidings.messages import Ping, Presence, Publish, RequestStatus, Since, Subscribe, Unsubscribe
from tidings.protocol import (
    CHANNEL_RE,
    CloseCode,
    ErrorCode,
    Frame,
    ProtocolError,
    encode,
    error_message,
    parse_client_message,
    with_position,
    ws_text_frame,
)


def parse_error(text: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(text)
    return info.value


# ---- parsing: valid messages -------------------------------------------------------------------------------


def test_parse_messages_without_fields() -> None:
    assert parse_client_message('{"type": "ping"}') == Ping(type="ping")
    assert parse_client_message('{"type": "request_status"}') == RequestStatus(type="request_status")


def test_parse_accepts_bytes() -> None:
    assert parse_client_message(b'{"type": "ping", "id": 3}') == Ping(type="ping", id=3)


@pytest.mark.parametrize("msg_id", ["abc", 7, 0, -1, ""])
def test_parse_keeps_string_or_integer_id(msg_id: Any) -> None:
    assert parse_client_message(json.dumps({"type": "ping", "id": msg_id})).id == msg_id


@pytest.mark.parametrize("key", ["subscription", "channel"])
def test_parse_subscribe_accepts_subscription_or_channel(key: str) -> None:
    msg = parse_client_message(json.dumps({"type": "subscribe", key: "job_updates", "id": "s1"}))
    assert msg == Subscribe(type="subscribe", id="s1", subscription="job_updates")
    assert isinstance(msg, Subscribe) and msg.since is None


def test_parse_subscribe_prefers_subscription_over_channel() -> None:
    msg = parse_client_message(json.dumps({"type": "subscribe", "subscription": "a", "channel": "b"}))
    assert isinstance(msg, Subscribe) and msg.subscription == "a"


def test_parse_subscribe_with_since() -> None:
    msg = parse_client_message(
        json.dumps({"type": "subscribe", "subscription": "room:x", "since": {"offset": 12, "epoch": "ab12"}})
    )
    assert isinstance(msg, Subscribe)
    assert (msg.subscription, msg.since) == ("room:x", Since(offset=12, epoch="ab12"))


def test_parse_subscribe_with_null_since_is_a_plain_subscribe() -> None:
    msg = parse_client_message(json.dumps({"type": "subscribe", "subscription": "room:x", "since": None}))
    assert isinstance(msg, Subscribe) and msg.since is None


def test_parse_since_is_ignored_on_unsubscribe() -> None:
    msg = parse_client_message(json.dumps({"type": "unsubscribe", "subscription": "room:x", "since": "junk"}))
    assert msg == Unsubscribe(type="unsubscribe", subscription="room:x")


def test_parse_presence() -> None:
    msg = parse_client_message(json.dumps({"type": "presence", "subscription": "room:x"}))
    assert msg == Presence(type="presence", subscription="room:x")


@pytest.mark.parametrize("data", [{"text": "hi"}, [1, 2], "s", 0, None])
def test_parse_publish(data: Any) -> None:
    msg = parse_client_message(json.dumps({"type": "publish", "channel": "room:x", "data": data, "id": 9}))
    assert msg == Publish(type="publish", id=9, channel="room:x", data=data)


def test_parse_publish_accepts_subscription_as_channel() -> None:
    msg = parse_client_message('{"type":"publish","subscription":"room:x","data":1}')
    assert isinstance(msg, Publish) and msg.channel == "room:x"


# ---- parsing: bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "not json", "{", '{"type": "ping",}', "\xff", b"\xff\xfe"])
def test_parse_invalid_json(text: str | bytes) -> None:
    err = parse_error(text)
    assert err.code is ErrorCode.INVALID_JSON
    assert err.message == "Invalid JSON format"
    assert err.msg_id is None


@pytest.mark.parametrize("text", ["[]", "1", '"ping"', "null", '[{"type": "ping"}]'])
def test_parse_non_object(text: str) -> None:
    err = parse_error(text)
    assert err.code is ErrorCode.BAD_REQUEST
    assert "object" in err.message


@pytest.mark.parametrize(
    ("obj", "shown"),
    [
        ({"type": "dance"}, "dance"),
        ({"type": "PING"}, "PING"),
        ({}, "None"),
        ({"type": 5}, "5"),
    ],
)
def test_parse_unknown_type(obj: dict[str, Any], shown: str) -> None:
    err = parse_error(json.dumps({**obj, "id": "x"}))
    assert err.code is ErrorCode.UNKNOWN_TYPE
    assert err.message == f"Unknown message type: {shown}"
    assert err.msg_id == "x"


@pytest.mark.parametrize("msg_id", [True, False, 1.5, [1], {"a": 1}])
def test_parse_bad_id(msg_id: Any) -> None:
    err = parse_error(json.dumps({"type": "ping", "id": msg_id}))
    assert err.code is ErrorCode.BAD_REQUEST
    assert "'id'" in err.message


@pytest.mark.parametrize("msg_type", ["subscribe", "unsubscribe", "presence"])
def test_parse_missing_subscription(msg_type: str) -> None:
    err = parse_error(json.dumps({"type": msg_type, "id": 4}))
    assert err.code is ErrorCode.BAD_REQUEST
    assert err.message == f"'subscription' is required for {msg_type}"
    assert err.msg_id == 4
    assert err.field == "subscription"


@pytest.mark.parametrize("value", [1, None, ["a"], {"a": 1}, True])
def test_parse_subscription_must_be_a_string(value: Any) -> None:
    err = parse_error(json.dumps({"type": "subscribe", "subscription": value}))
    assert err.code is ErrorCode.BAD_REQUEST
    assert err.message == "'subscription' must be a string"
    assert err.field == "subscription"


def test_parse_publish_missing_channel() -> None:
    err = parse_error('{"type": "publish", "data": {}}')
    assert err.code is ErrorCode.BAD_REQUEST
    assert err.message == "'channel' is required for publish"


def test_parse_publish_missing_data() -> None:
    err = parse_error('{"type": "publish", "channel": "room:x", "id": "p"}')
    assert err.code is ErrorCode.BAD_REQUEST
    assert err.message == "'data' is required for publish"
    assert err.msg_id == "p"
    assert err.field == "data"


@pytest.mark.parametrize(
    ("since", "field", "message"),
    [
        ({"offset": -1, "epoch": "e"}, "since.offset", "'since.offset' must be a non-negative integer"),
        ({"offset": True, "epoch": "e"}, "since.offset", "'since.offset' must be an integer"),
        ({"offset": 1.5, "epoch": "e"}, "since.offset", "'since.offset' must be an integer"),
        ({"offset": "1", "epoch": "e"}, "since.offset", "'since.offset' must be an integer"),
        ({"offset": 1}, "since.epoch", "'since.epoch' is required for subscribe"),
        ({"epoch": "e"}, "since.offset", "'since.offset' is required for subscribe"),
        ({"offset": 1, "epoch": 5}, "since.epoch", "'since.epoch' must be a string"),
        ("1:e", "since", "'since' must be an object"),
        ([1, "e"], "since", "'since' must be an object"),
        (5, "since", "'since' must be an object"),
    ],
)
def test_parse_bad_since_names_the_field(since: Any, field: str, message: str) -> None:
    err = parse_error(json.dumps({"type": "subscribe", "subscription": "room:x", "since": since, "id": 1}))
    assert err.code is ErrorCode.BAD_REQUEST
    assert (err.field, err.message) == (field, message)
    assert err.msg_id == 1


def test_protocol_error_is_an_exception_with_its_message() -> None:
    err = ProtocolError(ErrorCode.FORBIDDEN, "no", 3)
    assert str(err) == "no"
    assert (err.code, err.message, err.msg_id) == (ErrorCode.FORBIDDEN, "no", 3)


# ---- channel names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "job_updates", "room:a-b.c@d", "user:7", "x" * 128, "A:Z:09"])
def test_channel_names_allowed(name: str) -> None:
    assert CHANNEL_RE.match(name)


@pytest.mark.parametrize("name", ["", "x" * 129, "room x", "room/x", "é", "a\nb", "room:*", "a,b"])
def test_channel_names_refused(name: str) -> None:
    assert not CHANNEL_RE.match(name)


# ---- codes -------------------------------------------------------------------------------------------------


def test_close_code_values_follow_the_protocol() -> None:
    assert {c.name: int(c) for c in CloseCode} == {
        "NORMAL": 1000,
        "GOING_AWAY": 1001,
        "ABNORMAL": 1006,
        "POLICY_VIOLATION": 1008,
        "MESSAGE_TOO_BIG": 1009,
        "INTERNAL_ERROR": 1011,
        "TRY_AGAIN_LATER": 1013,
        "SLOW_CONSUMER": 4000,
        "IDLE_TIMEOUT": 4001,
        "RATE_LIMITED": 4002,
        "TOKEN_EXPIRED": 4003,
        "PERMISSIONS_CHANGED": 4004,
    }


def test_close_codes_say_whether_to_reconnect() -> None:
    reconnect = {c for c in CloseCode if c.reconnect}
    assert reconnect == {1001, 1006, 1011, 1013, 4000, 4001, 4002, 4003, 4004}
    assert not CloseCode.NORMAL.reconnect
    assert not CloseCode.POLICY_VIOLATION.reconnect
    assert not CloseCode.MESSAGE_TOO_BIG.reconnect


def test_error_codes_are_the_documented_strings() -> None:
    for code in ("invalid_json", "unknown_type", "bad_request", "forbidden", "rate_limited", "not_found"):
        assert str(ErrorCode(code)) == code
    assert str(ErrorCode.UNAVAILABLE) == "unavailable"


# ---- encoding ----------------------------------------------------------------------------------------------


def test_error_message_with_and_without_id() -> None:
    assert error_message(ErrorCode.UNKNOWN_TYPE, "Unknown message type: x") == {
        "type": "error",
        "code": "unknown_type",
        "message": "Unknown message type: x",
    }
    assert error_message(ErrorCode.BAD_REQUEST, "'x' must be a string", "r1", "x") == {
        "type": "error",
        "code": "bad_request",
        "message": "'x' must be a string",
        "field": "x",
        "id": "r1",
    }
    assert error_message(ErrorCode.BAD_REQUEST, "m", 0)["id"] == 0


def test_encode_is_compact_utf8_json() -> None:
    assert encode({"type": "pong", "text": "é", "n": [1, 2]}) == '{"type":"pong","text":"é","n":[1,2]}'.encode()


def test_frame_of_encodes_once_and_caches_text_and_wire() -> None:
    frame = Frame.of({"type": "publication", "data": {"v": "ü"}})
    assert frame.payload == '{"type":"publication","data":{"v":"ü"}}'.encode()
    assert frame.text == '{"type":"publication","data":{"v":"ü"}}'
    assert frame.text is frame.text
    assert frame.wire is frame.wire
    assert frame.wire == ws_text_frame(frame.payload)


def parse_frames(data: bytes) -> list[tuple[Opcode, bytes, bool]]:
    """Parse server-to-client frames with an independent implementation (wsproto)."""
    proto = FrameProtocol(client=True, extensions=[])
    proto.receive_bytes(data)
    out = []
    for f in proto.received_frames():
        raw: Any = f.payload
        payload = raw.encode() if isinstance(raw, str) else bytes(raw)
        out.append((f.opcode, payload, f.frame_finished))
    return out


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (0, b"\x81\x00"),
        (1, b"\x81\x01"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
        (70000, b"\x81\x7f" + (70000).to_bytes(8, "big")),
    ],
)
def test_ws_text_frame_bytes(length: int, header: bytes) -> None:
    payload = b"a" * length
    wire = ws_text_frame(payload)
    assert wire == header + payload
    assert parse_frames(wire) == [(Opcode.TEXT, payload, True)]


def test_ws_text_frames_concatenate_into_a_stream() -> None:
    frames = [Frame.of({"n": i, "pad": "x" * (i * 50)}) for i in range(5)]
    parsed = parse_frames(b"".join(f.wire for f in frames))
    assert [json.loads(p) for _, p, _ in parsed] == [json.loads(f.payload) for f in frames]


def test_with_position_appends_offset_and_epoch() -> None:
    body = encode({"type": "publication", "channel": "c", "data": {"a": [1, {"b": 2}]}})
    out = with_position(body, 42, "e1f2")
    assert json.loads(out) == {
        "type": "publication",
        "channel": "c",
        "data": {"a": [1, {"b": 2}]},
        "offset": 42,
        "epoch": "e1f2",
    }
    assert out.startswith(body[:-1])


def test_with_position_on_an_empty_object() -> None:
    assert json.loads(with_position(b"{}", 1, "e")) == {"offset": 1, "epoch": "e"}


def test_with_position_large_offset() -> None:
    assert json.loads(with_position(b'{"x":1}', 2**53, "z"))["offset"] == 2**53
