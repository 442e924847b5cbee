"""Domain events on Kafka: topic names and the CloudEvents binary-mode envelope.

A message's headers are `ce_id`, `ce_type` (the protobuf full name), `ce_source`, `ce_time`,
`ce_specversion` and `content-type: application/protobuf`, plus our `ce_requestid` extension
carrying the request id across services; its value is the serialized protobuf message and its
key the aggregate id (Kafka keeps order per key).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.v1.event import CloudEvent
from google.protobuf import descriptor_pool, message, message_factory

CONTENT_TYPE = "application/protobuf"
REQUEST_ID_EXTENSION = "requestid"


def topic_for(service: str) -> str:
    return f"clinic.{service}.v1.events"


def dlq_for(topic: str) -> str:
    return f"{topic}.dlq"


def source_for(service: str) -> str:
    return f"/clinic/{service}"


class _ProtobufData:
    """The CloudEvents SDK's data format for payloads that are already serialized protobuf."""

    def write_data(self, data: bytes | None, datacontenttype: str | None) -> bytes:
        return data or b""

    def read_data(self, body: bytes, datacontenttype: str | None) -> bytes:
        return body


_FORMAT = _ProtobufData()


class MalformedEvent(ValueError):
    """A message that is not a valid event of ours: it can never be processed."""


@dataclass(frozen=True)
class EventEnvelope:
    """What the consumer knows about an event besides its payload."""

    id: str
    type: str
    source: str
    time: datetime | None
    request_id: str | None
    key: str | None
    topic: str = ""
    partition: int = -1
    offset: int = -1


def encode(
    *,
    event_id: str,
    event_type: str,
    source: str,
    time: datetime,
    key: str,
    payload: bytes,
    request_id: str | None = None,
) -> tuple[list[tuple[str, bytes]], bytes, bytes]:
    """(headers, key, value) of the Kafka message for one event."""
    attributes = {
        "id": event_id,
        "type": event_type,
        "source": source,
        "time": time,
        "specversion": "1.0",
        "datacontenttype": CONTENT_TYPE,
    }
    if request_id:
        attributes[REQUEST_ID_EXTENSION] = request_id
    msg = ce_kafka.to_binary(CloudEvent(attributes, payload), _FORMAT, key_mapper=lambda _: key)
    return list(msg.headers.items()), key.encode(), msg.value


def decode(
    headers: list[tuple[str, bytes]] | None,
    key: bytes | None,
    value: bytes | None,
    *,
    topic: str = "",
    partition: int = -1,
    offset: int = -1,
) -> tuple[EventEnvelope, bytes]:
    """Envelope and payload of a Kafka message; MalformedEvent when it is not a CloudEvent of ours."""
    try:
        header_map = {name: raw or b"" for name, raw in headers or []}
        event = ce_kafka.from_binary(
            ce_kafka.KafkaMessage(headers=header_map, key=None, value=value or b""), _FORMAT, CloudEvent
        )
    except (BaseCloudEventException, ValueError, UnicodeDecodeError) as exc:
        raise MalformedEvent(f"not a CloudEvents binary-mode message: {exc}") from exc
    if event.get_datacontenttype() != CONTENT_TYPE:
        raise MalformedEvent(f"content-type is {event.get_datacontenttype()!r}, expected {CONTENT_TYPE}")
    envelope = EventEnvelope(
        id=event.get_id(),
        type=event.get_type(),
        source=event.get_source(),
        time=event.get_time(),
        request_id=event.get_extension(REQUEST_ID_EXTENSION),
        key=key.decode(errors="replace") if key is not None else None,
        topic=topic,
        partition=partition,
        offset=offset,
    )
    return envelope, event.get_data() or b""


def message_class(type_name: str) -> type[message.Message] | None:
    """The generated class for a protobuf full name (its module must have been imported)."""
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(type_name)
    except KeyError:
        return None
    return message_factory.GetMessageClass(descriptor)
