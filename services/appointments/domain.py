"""Rules of the calendar: weekly templates, slots in the clinic's time zone (correct across
daylight-saving changes), what may be booked, state transitions and who may do what.
No gRPC and no SQL here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from clinic_platform.auth import Caller, Role
from clinic_platform.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied

CONFIRMED, CANCELLED, COMPLETED, NO_SHOW = "CONFIRMED", "CANCELLED", "COMPLETED", "NO_SHOW"
MAX_RANGE_DAYS = 31
MAX_REASON = 500


@dataclass(frozen=True)
class WorkingHours:
    weekday: int  # 1 = Monday ... 7 = Sunday (google.type.DayOfWeek numbering)
    start: time
    end: time


@dataclass(frozen=True)
class VisitType:
    code: str
    name: str
    duration_minutes: int


@dataclass(frozen=True)
class Schedule:
    doctor_id: str
    slot_minutes: int = 30
    working_hours: tuple[WorkingHours, ...] = ()
    visit_types: tuple[VisitType, ...] = ()
    version: int = 0

    def visit_type(self, code: str) -> VisitType:
        for visit in self.visit_types:
            if visit.code == code:
                return visit
        offered = ", ".join(v.code for v in self.visit_types) or "none"
        raise InvalidArgument(
            "appointment.visit_type", f"{code!r} is not offered by this doctor (offered: {offered})"
        )


@dataclass(frozen=True)
class Slot:
    doctor_id: str
    start: datetime  # UTC
    end: datetime  # UTC


@dataclass
class Busy:
    """Intervals (UTC) in which a doctor cannot be booked: appointments and time off."""

    intervals: list[tuple[datetime, datetime]] = field(default_factory=list)

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return any(s < end and start < e for s, e in self.intervals)


def _local(day: date, clock: time, zone: ZoneInfo) -> datetime | None:
    """The instant of a local wall-clock time, or None when it does not exist (spring forward)."""
    wall = datetime.combine(day, clock, tzinfo=zone)  # fold=0: the first of two ambiguous times
    if wall.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wall.replace(tzinfo=None):
        return None
    return wall.astimezone(UTC)


def slot_starts(
    schedule: Schedule, day: date, zone: ZoneInfo, duration_minutes: int
) -> list[tuple[datetime, datetime]]:
    """(start, end) in UTC of every slot of `day` (local) where a visit of that length fits.

    Slots are laid out on the wall clock, so a 09:00 slot is 09:00 local time on both sides of
    a clock change; a visit must end by its working period's end (measured in real time)."""
    step = timedelta(minutes=schedule.slot_minutes)
    length = timedelta(minutes=duration_minutes)
    result = []
    for hours in schedule.working_hours:
        if hours.weekday != day.isoweekday():
            continue
        period_end = _local(day, hours.end, zone) or datetime.combine(day, hours.end, tzinfo=zone).astimezone(
            UTC
        )
        wall = datetime.combine(day, hours.start)
        wall_end = datetime.combine(day, hours.end)
        while wall < wall_end:
            start = _local(day, wall.time(), zone)
            if start is not None and start + length <= period_end:
                result.append((start, start + length))
            wall += step
    return sorted(result)


def free_slots(
    schedule: Schedule, days: list[date], zone: ZoneInfo, busy: Busy, *, duration_minutes: int, now: datetime
) -> list[Slot]:
    """Template minus busy intervals minus the past."""
    return [
        Slot(schedule.doctor_id, start, end)
        for day in days
        for start, end in slot_starts(schedule, day, zone, duration_minutes)
        if start > now and not busy.overlaps(start, end)
    ]


def check_bookable(
    schedule: Schedule, start: datetime, visit: VisitType, zone: ZoneInfo, now: datetime
) -> datetime:
    """The end of a visit starting at `start`; FailedPrecondition naming start_time otherwise.

    The same slots as `slot_starts` offers, found directly (this is on the booking hot path)."""
    if start <= now:
        raise FailedPrecondition(f"start_time: {start.isoformat()} is in the past")
    local = start.astimezone(zone)
    wall, day = local.replace(tzinfo=None), local.date()
    step = schedule.slot_minutes * 60
    end = start + timedelta(minutes=visit.duration_minutes)
    for hours in schedule.working_hours:
        if hours.weekday != day.isoweekday() or not hours.start <= wall.time() < hours.end:
            continue
        offset = (wall - datetime.combine(day, hours.start)).total_seconds()
        on_grid = offset % step == 0 and local.fold == 0  # slots use the first of two ambiguous times
        period_end = _local(day, hours.end, zone) or datetime.combine(day, hours.end, tzinfo=zone).astimezone(
            UTC
        )
        if on_grid and end <= period_end:
            return end
    shown = local.strftime("%Y-%m-%d %H:%M %Z")
    raise FailedPrecondition(
        f"start_time: {shown} is not a slot of the doctor's schedule for a {visit.duration_minutes}-minute "
        f"{visit.code} (see GET /v1/appointments/available)"
    )


def check_schedule(schedule: Schedule) -> None:
    if not 5 <= schedule.slot_minutes <= 240:
        raise InvalidArgument("schedule.slot_minutes", "must be between 5 and 240")
    by_day: dict[int, list[WorkingHours]] = {}
    for index, hours in enumerate(schedule.working_hours):
        name = f"schedule.working_hours[{index}]"
        if not 1 <= hours.weekday <= 7:
            raise InvalidArgument(f"{name}.day_of_week", "must be a weekday")
        if hours.end <= hours.start:
            raise InvalidArgument(f"{name}.end_time", "must be after start_time on the same day")
        for other in by_day.get(hours.weekday, []):
            if hours.start < other.end and other.start < hours.end:
                raise InvalidArgument(name, "overlaps another working period on the same day")
        by_day.setdefault(hours.weekday, []).append(hours)
    codes = set()
    for index, visit in enumerate(schedule.visit_types):
        name = f"schedule.visit_types[{index}]"
        if not visit.code.strip():
            raise InvalidArgument(f"{name}.code", "is required")
        if visit.code in codes:
            raise InvalidArgument(f"{name}.code", f"{visit.code!r} is listed twice")
        codes.add(visit.code)
        if visit.duration_minutes <= 0 or visit.duration_minutes % schedule.slot_minutes:
            raise InvalidArgument(
                f"{name}.duration_minutes",
                f"must be a positive multiple of slot_minutes ({schedule.slot_minutes})",
            )


def days_between(first: date, last: date) -> list[date]:
    if last < first:
        raise InvalidArgument("end_date", "must not be before start_date")
    if (last - first).days >= MAX_RANGE_DAYS:
        raise InvalidArgument("end_date", f"a range covers at most {MAX_RANGE_DAYS} days")
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


# -- transitions ----------------------------------------------------------------------------------
def check_cancel(status: str, start: datetime, now: datetime) -> bool:
    """True when there is something to cancel; False when it is cancelled already (a retry)."""
    if status == CANCELLED:
        return False
    if status != CONFIRMED:
        raise FailedPrecondition(
            f"the appointment is {status}: only a confirmed appointment can be cancelled"
        )
    if start <= now:
        raise FailedPrecondition(
            "the appointment has already started: mark it completed or a no-show instead"
        )
    return True


def check_transition(status: str, target: str, start: datetime, now: datetime) -> None:
    if target not in (COMPLETED, NO_SHOW):
        raise InvalidArgument(
            "appointment.status", "may only become COMPLETED or NO_SHOW (cancel with DELETE)"
        )
    if status != CONFIRMED:
        raise FailedPrecondition(
            f"the appointment is {status}: only a confirmed appointment can become {target}"
        )
    if target == NO_SHOW and start > now:
        raise FailedPrecondition("a no-show can only be recorded after the start time")


def check_reschedule(status: str) -> None:
    if status != CONFIRMED:
        raise FailedPrecondition(f"the appointment is {status}: only a confirmed appointment can be moved")


# -- who may do what ------------------------------------------------------------------------------
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
