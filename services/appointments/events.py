"""The events appointments publishes (clinic.appointments.v1.events), from domain changes."""

from __future__ import annotations

from appointments.domain import CANCELLED, COMPLETED, Appointment
from clinic.appointments.v1 import events_pb2
from clinic_platform.convert import timestamp


def _common(appointment: Appointment) -> dict:
    return {
        "appointment_id": str(appointment.id),
        "version": appointment.version,
        "patient_id": str(appointment.patient_id),
        "doctor_id": str(appointment.doctor_id),
        "start_time": timestamp(appointment.start_time),
        "end_time": timestamp(appointment.end_time),
        "visit_type": appointment.visit_type,
    }


def booked(appointment: Appointment) -> events_pb2.AppointmentBooked:
    return events_pb2.AppointmentBooked(**_common(appointment), book_time=timestamp(appointment.create_time))


def rescheduled(moved: Appointment, previous: Appointment) -> events_pb2.AppointmentRescheduled:
    return events_pb2.AppointmentRescheduled(
        **_common(moved),
        previous_start_time=timestamp(previous.start_time),
        previous_end_time=timestamp(previous.end_time),
        reschedule_time=timestamp(moved.update_time),
    )


def status_changed(changed: Appointment, by: str):
    """AppointmentCancelled (by whom), AppointmentCompleted or AppointmentNoShow."""
    fields, now = _common(changed), changed.update_time
    if changed.status == CANCELLED:
        return events_pb2.AppointmentCancelled(
            **fields, reason=changed.cancel_reason, cancelled_by=by, cancel_time=timestamp(now)
        )
    if changed.status == COMPLETED:
        return events_pb2.AppointmentCompleted(**fields, complete_time=timestamp(now))
    return events_pb2.AppointmentNoShow(**fields, mark_time=timestamp(now))
