"""The payment service's event handlers: appointments' events move their invoices."""

from __future__ import annotations

from datetime import UTC

from clinic.appointments.v1 import events_pb2 as appointment_events
from clinic_platform.events import EventEnvelope
from payment import domain
from payment.invoices import Invoices

# What each appointment event says the appointment is now.
STATE_OF_EVENT = {
    appointment_events.AppointmentBooked: domain.BOOKED,
    appointment_events.AppointmentRescheduled: domain.BOOKED,
    appointment_events.AppointmentCompleted: domain.COMPLETED,
    appointment_events.AppointmentNoShow: domain.NO_SHOW,
    appointment_events.AppointmentCancelled: domain.CANCELLED,
}


class AppointmentEvents:
    def __init__(self, invoices: Invoices) -> None:
        self.invoices = invoices

    def handlers(self) -> dict:
        """Handlers by event type, for `ServiceApp.add_consumer`."""
        return {event: self.on_appointment_event for event in STATE_OF_EVENT}

    async def on_appointment_event(self, session, event, envelope: EventEnvelope) -> None:
        await self.invoices.follow_appointment(
            session,
            appointment_id=event.appointment_id,
            patient_id=event.patient_id,
            visit_type=event.visit_type,
            start_time=event.start_time.ToDatetime(tzinfo=UTC),
            version=event.version,
            state=STATE_OF_EVENT[type(event)],
        )
