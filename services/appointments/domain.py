"""Rules of the calendar: weekly templates, slots in the clinic's time zone (correct across
daylight-saving changes), what may be booked, the appointment's state transitions, and why a
write the calendar refused was refused. Who may do what is in permissions.py. No gRPC and no SQL."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from clinic_platform.errors import AlreadyExists, FailedPrecondition, InvalidArgument, ServiceError

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
class Doctor:
    id: uuid.UUID
    display_name: str
    specialty: str


@dataclass(frozen=True)
class DoctorCalendar:
    """A doctor's directory entry and weekly template, as booking checks them."""

    doctor_id: uuid.UUID
    display_name: str
    specialty: str
    active: bool
    schedule: Schedule


@dataclass(frozen=True)
class Appointment:
    id: uuid.UUID
    patient_id: uuid.UUID
    doctor_id: uuid.UUID
    start_time: datetime
    end_time: datetime
    visit_type: str
    status: str
    reason: str
    cancel_reason: str
    version: int
    create_time: datetime
    update_time: datetime
    changed_by: uuid.UUID | None = None


@dataclass(frozen=True)
class TimeOff:
    id: uuid.UUID
    doctor_id: uuid.UUID
    start_time: datetime
    end_time: datetime
    reason: str
    create_time: datetime


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


def moved(appointment: Appointment, start: datetime, end: datetime, *, by: str, now: datetime) -> Appointment:
    check_reschedule(appointment.status)
    return replace(
        appointment,
        start_time=start,
        end_time=end,
        version=appointment.version + 1,
        update_time=now,
        changed_by=uuid.UUID(by),
    )


def with_status(
    appointment: Appointment, status: str, *, by: str, now: datetime, reason: str = ""
) -> Appointment:
    """The appointment once cancelled, completed or marked a no-show (the caller checked the move)."""
    return replace(
        appointment,
        status=status,
        cancel_reason=reason,
        version=appointment.version + 1,
        update_time=now,
        changed_by=uuid.UUID(by),
    )


def check_reason(text: str, field: str) -> None:
    """A reason for a visit or a cancellation."""
    if len(text) > MAX_REASON:
        raise InvalidArgument(field, f"must have at most {MAX_REASON} characters")


# -- time off -------------------------------------------------------------------------------------
def check_time_off(start: datetime, end: datetime) -> None:
    if end <= start:
        raise InvalidArgument("time_off.end_time", "must be after start_time")


def time_off_reason(text: str) -> str:
    return text.strip()[:MAX_REASON]


# -- overlaps -------------------------------------------------------------------------------------
class Overlap(Exception):
    """The calendar refused a write whose period overlaps: another appointment of the patient
    (`patient`), or else the doctor's confirmed visits or time off. The database decides this."""

    def __init__(self, *, patient: bool) -> None:
        super().__init__("the patient's calendar" if patient else "the doctor's calendar")
        self.patient = patient


def booking_refused(overlap: Overlap, doctor_has_visit: bool) -> ServiceError:
    """The error for a booking or move the calendar refused: the slot is taken or the doctor away."""
    if overlap.patient:
        return AlreadyExists("the patient already has an appointment at that time")
    if doctor_has_visit:
        return AlreadyExists("time slot already booked")
    return FailedPrecondition("start_time: the doctor is away then (time off)")


def time_off_refused(visits: int) -> FailedPrecondition:
    """The error for time off the calendar refused, given the confirmed visits in its period."""
    if visits:
        return FailedPrecondition(
            f"{visits} confirmed appointment(s) in this period; cancel or move them first"
        )
    return FailedPrecondition("this period overlaps time off that is already entered")
