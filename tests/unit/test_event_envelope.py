from datetime import UTC, datetime

import pytest
from google.protobuf import wrappers_pb2

from clinic_platform import events


def test_an_event_round_trips_through_cloudevents_binary_headers():
    when = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
    payload = wrappers_pb2.StringValue(value="hello").SerializeToString()
    headers, key, value = events.encode(
        event_id="2f1c3f0e-5c3a-4a9e-9a47-1b8f0d6f8e11",
        event_type="google.protobuf.StringValue",
        source="/clinic/appointments",
        time=when,
        key="appt-1",
        payload=payload,
        request_id="req-7",
    )
    header_map = dict(headers)
    assert header_map["ce_id"] == b"2f1c3f0e-5c3a-4a9e-9a47-1b8f0d6f8e11"
    assert header_map["ce_type"] == b"google.protobuf.StringValue"
    assert header_map["ce_source"] == b"/clinic/appointments"
    assert header_map["ce_specversion"] == b"1.0"
    assert header_map["ce_time"] == b"2026-11-22T09:30:00Z"
    assert header_map["content-type"] == b"application/protobuf"
    assert key == b"appt-1"
    assert value == payload

    envelope, data = events.decode(headers, key, value, topic="t", partition=1, offset=5)
    assert (envelope.id, envelope.type, envelope.request_id, envelope.key) == (
        "2f1c3f0e-5c3a-4a9e-9a47-1b8f0d6f8e11",
        "google.protobuf.StringValue",
        "req-7",
        "appt-1",
    )
    assert envelope.time == when
    assert wrappers_pb2.StringValue.FromString(data).value == "hello"


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("ce_id", b"1"), ("ce_source", b"/x"), ("ce_specversion", b"1.0")],  # no type
        [
            ("ce_id", b"1"),
            ("ce_type", b"t"),
            ("ce_source", b"/x"),
            ("ce_specversion", b"1.0"),
            ("content-type", b"application/json"),
        ],
    ],
)
def test_a_message_that_is_not_one_of_our_events_is_malformed(headers):
    with pytest.raises(events.MalformedEvent):
        events.decode(headers, None, b"{}")


def test_message_class_finds_imported_types_only():
    assert events.message_class("google.protobuf.StringValue") is wrappers_pb2.StringValue
    assert events.message_class("clinic.nothing.v1.Nope") is None
