"""Real domain events for the kit's tests, and a handler whose effect a test can count."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from confluent_kafka import Producer
from sqlalchemy import MetaData, insert
from sqlalchemy.ext.asyncio import AsyncSession

from clinic.appointments.v1 import events_pb2
from clinic_platform import events
from clinic_platform.events import EventEnvelope


def booked(note: str = "ok", appointment_id: str | None = None) -> events_pb2.AppointmentBooked:
    """An AppointmentBooked whose visit_type carries a note for the ledger handler."""
    event = events_pb2.AppointmentBooked(
        appointment_id=appointment_id or str(uuid.uuid4()),
        version=1,
        patient_id=str(uuid.uuid4()),
        doctor_id=str(uuid.uuid4()),
        visit_type=note,
    )
    event.start_time.FromDatetime(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    event.end_time.FromDatetime(datetime(2026, 12, 1, 9, 30, tzinfo=UTC))
    return event


def unique_topic() -> str:
    return f"clinic.kittest{uuid.uuid4().hex[:8]}.v1.events"


def ledger_handler(metadata: MetaData):
    """Writes one ledger row per applied event; a visit_type of "fail" makes it raise every time."""
    ledger = metadata.tables["ledger"]

    async def handle(
        session: AsyncSession, event: events_pb2.AppointmentBooked, envelope: EventEnvelope
    ) -> None:
        await session.execute(
            insert(ledger).values(
                event_id=uuid.UUID(envelope.id), aggregate_id=event.appointment_id, note=event.visit_type
            )
        )
        if event.visit_type == "fail":
            raise ValueError("this event can never be applied")

    return handle


def produce_raw(bootstrap: str, topic: str, messages: list[tuple[list, bytes, bytes]]) -> None:
    """Put (headers, key, value) messages on a topic exactly as given (blocking)."""
    producer = Producer({"bootstrap.servers": bootstrap, "batch.num.messages": 1, "log_level": 0})
    for headers, key, value in messages:
        producer.produce(topic, value, key, headers=headers)
    assert producer.flush(10) == 0, "test messages were not delivered"


def encoded(event, *, event_id: str | None = None, source: str = "/clinic/appointments"):
    """(headers, key, value) of an event in our CloudEvents binary format."""
    return events.encode(
        event_id=event_id or str(uuid.uuid4()),
        event_type=event.DESCRIPTOR.full_name,
        source=source,
        time=datetime.now(UTC),
        key=event.appointment_id,
        payload=event.SerializeToString(),
    )
