"""The AppointmentsService's resources, proto <-> domain: what the servicer answers and what it
reads from a request (a weekly template)."""

from __future__ import annotations

from datetime import datetime, time

from google.type import timeofday_pb2

from appointments.domain import (
    Appointment,
    Doctor,
    DoctorCalendar,
    Schedule,
    TimeOff,
    VisitType,
    WorkingHours,
)
from clinic.appointments.v1 import resources_pb2
from clinic_platform.convert import enum_value, timestamp
from clinic_platform.errors import InvalidArgument


def appointment_message(appointment: Appointment) -> resources_pb2.Appointment:
    return resources_pb2.Appointment(
        id=str(appointment.id),
        patient_id=str(appointment.patient_id),
        doctor_id=str(appointment.doctor_id),
        start_time=timestamp(appointment.start_time),
        end_time=timestamp(appointment.end_time),
        visit_type=appointment.visit_type,
        status=enum_value(resources_pb2.AppointmentStatus, appointment.status),
        reason_for_visit=appointment.reason,
        cancel_reason=appointment.cancel_reason,
        create_time=timestamp(appointment.create_time),
        update_time=timestamp(appointment.update_time),
    )


def doctor_message(doctor: Doctor | DoctorCalendar) -> resources_pb2.Doctor:
    doctor_id = doctor.id if isinstance(doctor, Doctor) else doctor.doctor_id
    return resources_pb2.Doctor(
        id=str(doctor_id), display_name=doctor.display_name, specialty=doctor.specialty
    )


def schedule_message(
    calendar: DoctorCalendar, zone: str, update_time: datetime | None = None
) -> resources_pb2.Schedule:
    schedule = calendar.schedule
    return resources_pb2.Schedule(
        doctor_id=str(calendar.doctor_id),
        working_hours=[
            resources_pb2.WorkingHours(
                day_of_week=h.weekday,
                start_time=timeofday_pb2.TimeOfDay(hours=h.start.hour, minutes=h.start.minute),
                end_time=timeofday_pb2.TimeOfDay(hours=h.end.hour, minutes=h.end.minute),
            )
            for h in schedule.working_hours
        ],
        slot_minutes=schedule.slot_minutes,
        visit_types=[
            resources_pb2.VisitType(code=v.code, name=v.name, duration_minutes=v.duration_minutes)
            for v in schedule.visit_types
        ],
        time_zone=zone,
        update_time=timestamp(update_time),
    )


def time_off_message(time_off: TimeOff) -> resources_pb2.TimeOff:
    return resources_pb2.TimeOff(
        id=str(time_off.id),
        doctor_id=str(time_off.doctor_id),
        start_time=timestamp(time_off.start_time),
        end_time=timestamp(time_off.end_time),
        reason=time_off.reason,
        create_time=timestamp(time_off.create_time),
    )


def updated_schedule(current: Schedule, wanted: resources_pb2.Schedule, paths: set[str]) -> Schedule:
    """`current` with the fields of `wanted` that the update mask names."""
    return Schedule(
        current.doctor_id,
        wanted.slot_minutes if "slot_minutes" in paths else current.slot_minutes,
        tuple(
            WorkingHours(
                h.day_of_week,
                _clock(h.start_time, f"schedule.working_hours[{i}].start_time"),
                _clock(h.end_time, f"schedule.working_hours[{i}].end_time"),
            )
            for i, h in enumerate(wanted.working_hours)
        )
        if "working_hours" in paths
        else current.working_hours,
        tuple(
            VisitType(v.code.strip(), v.name.strip() or v.code.strip(), v.duration_minutes)
            for v in wanted.visit_types
        )
        if "visit_types" in paths
        else current.visit_types,
    )


def _clock(value: timeofday_pb2.TimeOfDay, field: str) -> time:
    try:
        return time(value.hours, value.minutes)
    except ValueError:
        raise InvalidArgument(field, f"{value.hours:02}:{value.minutes:02} is not a time of day") from None
