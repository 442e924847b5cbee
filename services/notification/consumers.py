"""Event handlers, in the consumer's inbox transaction: keep the recipients projection and the
reminder schedule, and write a *notice* per person to tell (unique per event and person). Nothing
is sent here: what a transaction writes wakes the dispatcher once it is committed."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from clinic.appointments.v1 import events_pb2 as appointments
from clinic.insurance.v1 import events_pb2 as insurance
from clinic.insurance.v1 import resources_pb2 as insurance_resources
from clinic.medical_records.v1 import events_pb2 as records
from clinic.payment.v1 import events_pb2 as payment
from clinic.payment.v1 import resources_pb2 as payment_resources
from clinic.user_management.v1 import events_pb2 as users
from clinic.user_management.v1 import resources_pb2 as user_resources
from clinic_platform.convert import enum_name
from clinic_platform.db import after_commit
from clinic_platform.events import EventEnvelope
from clinic_platform.money import from_proto
from notification import reminders, store
from notification.domain import NotifierSettings

APPOINTMENT_MESSAGES = {
    appointments.AppointmentBooked: "APPOINTMENT_BOOKED",
    appointments.AppointmentRescheduled: "APPOINTMENT_RESCHEDULED",
    appointments.AppointmentCancelled: "APPOINTMENT_CANCELLED",
    appointments.AppointmentCompleted: "APPOINTMENT_COMPLETED",
}  # a no-show tells nobody; it only cancels the reminder
INVOICE_MESSAGES = {
    payment_resources.INVOICE_STATUS_DUE: "INVOICE_DUE",
    payment_resources.INVOICE_STATUS_PAID: "INVOICE_PAID",
}


def _preferences(prefs: user_resources.NotificationPreferences) -> dict:
    kind, channel = user_resources.MessageKind, user_resources.Channel
    return {
        "messages": {
            enum_name(kind, m.kind): [enum_name(channel, c) for c in m.channels] for m in prefs.messages
        },
        "opted_out_channels": [enum_name(channel, c) for c in prefs.opted_out_channels],
    }


def _source(envelope: EventEnvelope, event) -> store.SourceEvent:
    return store.SourceEvent(
        envelope.topic, envelope.type, envelope.key or "", event.SerializeToString(), envelope.time
    )


class Consumers:
    """The handlers of every event a person should hear about, plus the projections; `wake` is
    the dispatcher's doorbell."""

    def __init__(self, settings: NotifierSettings, wake: Callable[[], None]) -> None:
        self.reminder_lead = settings.reminder_lead
        self.wake = wake

    def handlers(self) -> dict:
        return {
            users.UserRegistered: self.on_user_changed,
            users.UserUpdated: self.on_user_changed,
            users.UserDeactivated: self.on_user_deactivated,
            **dict.fromkeys([*APPOINTMENT_MESSAGES, appointments.AppointmentNoShow], self.on_appointment),
            payment.InvoiceStatusChanged: self.on_invoice_status_changed,
            payment.RefundIssued: self.on_refund_issued,
            insurance.ClaimAdjudicated: self.on_claim_adjudicated,
            records.RecordAccessRequested: self.on_record_access,
            records.EmergencyAccessUsed: self.on_record_access,
        }

    async def on_user_changed(self, session, event, envelope: EventEnvelope) -> None:
        """Keep the person's contact details and channel choices (newest version wins)."""
        deactivated = (
            isinstance(event, users.UserUpdated) and event.status == user_resources.USER_STATUS_DEACTIVATED
        )
        values = {
            "id": uuid.UUID(event.user_id),
            "email": event.email,
            "phone_number": event.phone_number,
            "display_name": event.display_name or f"{event.given_name} {event.family_name}".strip(),
            "role": enum_name(user_resources.Role, event.role),
            "preferences": _preferences(event.notification_preferences),
            "active": not deactivated,
            "user_version": event.version,
        }
        await store.save_recipient(session, values)
        after_commit(session, self.wake)  # notices may have been waiting for this person

    async def on_user_deactivated(self, session, event, envelope: EventEnvelope) -> None:
        await store.deactivate_recipient(session, uuid.UUID(event.user_id), event.version)

    async def on_appointment(self, session, event, envelope: EventEnvelope) -> None:
        """One reminder per confirmed appointment time (booking or moving schedules it, every other
        change cancels what is scheduled) and a notice to the patient, unless an event as new was
        applied already (telling an old one now would mislead). One statement."""
        variables = {
            "start_time": event.start_time.ToJsonString(),
            "doctor_id": event.doctor_id,
            "visit_type": event.visit_type,
        }
        if isinstance(event, appointments.AppointmentRescheduled):
            variables["previous_start_time"] = event.previous_start_time.ToJsonString()
        now = datetime.now(UTC)
        start = event.start_time.ToDatetime(tzinfo=UTC)
        confirmed = isinstance(event, appointments.AppointmentBooked | appointments.AppointmentRescheduled)
        scheduled, send_time = reminders.schedule(start, now, self.reminder_lead, confirmed=confirmed)
        await store.apply_appointment_event(
            session,
            appointment_id=uuid.UUID(event.appointment_id),
            version=event.version,
            schedule=scheduled,
            now=now,
            patient_id=uuid.UUID(event.patient_id),
            doctor_id=uuid.UUID(event.doctor_id),
            visit_type=event.visit_type,
            start=start,
            send_time=send_time,
            event_id=uuid.UUID(envelope.id),
            message=APPOINTMENT_MESSAGES.get(type(event)),
            variables=variables,
            source=_source(envelope, event),
        )
        after_commit(session, self.wake)

    async def on_invoice_status_changed(self, session, event, envelope: EventEnvelope) -> None:
        message = INVOICE_MESSAGES.get(event.new_status)
        if message:
            amount = str(from_proto(event.amount_due, "amount_due", allow_negative=True))
            await self._notice(session, envelope, event, message, {"amount": amount})

    async def on_refund_issued(self, session, event, envelope: EventEnvelope) -> None:
        amount = str(from_proto(event.amount, "amount"))
        await self._notice(session, envelope, event, "REFUND_ISSUED", {"amount": amount})

    async def on_claim_adjudicated(self, session, event, envelope: EventEnvelope) -> None:
        decision = enum_name(insurance_resources.ClaimStatus, event.status).replace("_", " ").lower()
        await self._notice(session, envelope, event, "CLAIM_ADJUDICATED", {"decision": decision})

    async def on_record_access(self, session, event, envelope: EventEnvelope) -> None:
        """The patient hears who asked for (or opened) their chart, never why: a clinician's reason
        may be clinical, and the events carry ids only anyway. Break-the-glass is also told to every
        active admin, who reviews it. One notice per event and person (a repeat changes nothing)."""
        if isinstance(event, records.EmergencyAccessUsed):
            variables = {
                "requester_id": event.doctor_id,
                "patient_id": event.patient_id,
                "start_time": event.access_time.ToJsonString(),
            }
            message = "EMERGENCY_ACCESS_USED"
        else:
            variables = {"requester_id": event.requester_id, "patient_id": event.patient_id}
            message = "RECORD_ACCESS_REQUESTED"
        await self._notice(session, envelope, event, message, variables)
        if message == "EMERGENCY_ACCESS_USED":
            for admin_id in await store.active_admins(session):
                await self._notice(session, envelope, event, message, variables, recipient_id=admin_id)

    async def _notice(
        self,
        session,
        envelope: EventEnvelope,
        event,
        event_type: str,
        variables: dict,
        *,
        recipient_id: uuid.UUID | None = None,
    ) -> None:
        """The event's patient (or `recipient_id`) must hear about it (once), with the event kept
        for the DLQ."""
        await store.add_notice(
            session,
            source_event_id=uuid.UUID(envelope.id),
            recipient_id=recipient_id or uuid.UUID(event.patient_id),
            event_type=event_type,
            variables=variables,
            source=_source(envelope, event),
        )
        after_commit(session, self.wake)
