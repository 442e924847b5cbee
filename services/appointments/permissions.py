"""Who may do what with a calendar: booking for whom, seeing, cancelling and moving appointments,
recording their outcome, changing schedules and time off. Plain rules on the caller's role and id;
"not found" where a caller may not even learn that an appointment exists."""

from __future__ import annotations

from appointments.domain import COMPLETED, NO_SHOW
from clinic_platform.auth import Caller, Role
from clinic_platform.errors import InvalidArgument, NotFound, PermissionDenied


def booking_patient(caller: Caller, requested_patient_id: str) -> str:
    """Whom the booking is for: a patient books for themself, front desk and admins for anyone."""
    if caller.role is Role.PATIENT:
        if requested_patient_id and requested_patient_id != caller.user_id:
            raise PermissionDenied("a patient may only book for themself")
        return caller.user_id
    if caller.role in (Role.RECEPTIONIST, Role.ADMIN):
        if not requested_patient_id:
            raise InvalidArgument("appointment.patient_id", "is required when staff book for a patient")
        return requested_patient_id
    raise PermissionDenied(f"a {caller.role.lower()} cannot book appointments")


def may_see(caller: Caller, patient_id: str, doctor_id: str, appointment_id: str) -> None:
    if caller.role in (Role.NURSE, Role.RECEPTIONIST, Role.ADMIN):
        return
    if caller.user_id in (patient_id, doctor_id):
        return
    raise NotFound(f"appointment {appointment_id} not found")


def may_cancel_or_move(
    caller: Caller, patient_id: str, doctor_id: str, appointment_id: str, *, move: bool
) -> None:
    may_see(caller, patient_id, doctor_id, appointment_id)
    if caller.role in (Role.NURSE, Role.RECEPTIONIST, Role.ADMIN) or caller.user_id == patient_id:
        return
    if caller.user_id == doctor_id and not move:
        return
    raise PermissionDenied("you may not " + ("move" if move else "cancel") + " this appointment")


def may_set_status(caller: Caller, target: str, doctor_id: str) -> None:
    if target == COMPLETED and caller.user_id != doctor_id:
        raise PermissionDenied("only the appointment's doctor may complete it")
    if (
        target == NO_SHOW
        and caller.user_id != doctor_id
        and caller.role not in (Role.NURSE, Role.RECEPTIONIST, Role.ADMIN)
    ):
        raise PermissionDenied("only the doctor or staff may record a no-show")


def may_manage_calendar(caller: Caller, doctor_id: str) -> None:
    """Schedules and time off: the doctor themself or an admin."""
    if caller.role is Role.ADMIN or (caller.role is Role.DOCTOR and caller.user_id == doctor_id):
        return
    raise PermissionDenied("only the doctor themself or an admin may change this calendar")


def list_scope(caller: Caller, doctor_id: str, patient_id: str) -> tuple[str, str]:
    """The (doctor_id, patient_id) filter a caller may use: patients and doctors see their own only."""
    if caller.role is Role.PATIENT:
        if patient_id and patient_id != caller.user_id:
            raise PermissionDenied("a patient may only list their own appointments")
        return doctor_id, caller.user_id
    if caller.role is Role.DOCTOR:
        if doctor_id and doctor_id != caller.user_id:
            raise PermissionDenied("a doctor may only list their own schedule")
        return caller.user_id, patient_id
    if caller.role is Role.ANALYST:
        raise PermissionDenied("analysts read reports, not appointments")
    return doctor_id, patient_id


def may_see_time_off(caller: Caller, doctor_id: str) -> None:
    if caller.role not in (Role.ADMIN, Role.RECEPTIONIST) and caller.user_id != doctor_id:
        raise PermissionDenied("only the doctor, the front desk and admins see time off")
