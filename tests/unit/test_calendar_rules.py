from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from appointments import domain
from appointments.domain import Busy, Schedule, VisitType, WorkingHours
from clinic_platform.errors import FailedPrecondition, InvalidArgument

BERLIN = ZoneInfo("Europe/Berlin")
CONSULT = VisitType("CONSULT", "Consultation", 30)
LONG = VisitType("LONG", "Long visit", 60)
EVERY_DAY = tuple(WorkingHours(day, time(9), time(12)) for day in range(1, 8))
SCHEDULE = Schedule("doc", 30, EVERY_DAY, (CONSULT, LONG))
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


def local_starts(day: date, duration: int = 30, schedule: Schedule = SCHEDULE) -> list[str]:
    return [
        s.astimezone(BERLIN).strftime("%H:%M") for s, _ in domain.slot_starts(schedule, day, BERLIN, duration)
    ]


@pytest.mark.parametrize(
    "day",
    [
        date(2027, 3, 27),
        date(2027, 3, 28),
        date(2027, 3, 29),
        date(2027, 10, 30),
        date(2027, 10, 31),
        date(2027, 11, 1),
    ],
)
def test_a_nine_oclock_slot_stays_at_nine_local_time_around_the_clock_changes(day):
    assert local_starts(day) == ["09:00", "09:30", "10:00", "10:30", "11:00", "11:30"]


def test_the_utc_instant_of_a_slot_moves_with_daylight_saving_time():
    def first(day):
        return domain.slot_starts(SCHEDULE, day, BERLIN, 30)[0][0]

    assert first(date(2027, 3, 27)) == datetime(2027, 3, 27, 8, 0, tzinfo=UTC)  # CET, UTC+1
    assert first(date(2027, 3, 29)) == datetime(2027, 3, 29, 7, 0, tzinfo=UTC)  # CEST, UTC+2
    assert first(date(2027, 10, 30)) == datetime(2027, 10, 30, 7, 0, tzinfo=UTC)
    assert first(date(2027, 11, 1)) == datetime(2027, 11, 1, 8, 0, tzinfo=UTC)


def test_slots_that_do_not_exist_on_the_wall_clock_are_skipped_and_visits_keep_their_real_length():
    night = Schedule("doc", 30, (WorkingHours(7, time(1, 0), time(4, 0)),), (CONSULT,))
    spring_forward = date(2027, 3, 28)  # a Sunday: 02:00 jumps to 03:00
    assert local_starts(spring_forward, schedule=night) == ["01:00", "01:30", "03:00", "03:30"]
    (start, end), *_ = domain.slot_starts(night, spring_forward, BERLIN, 30)
    assert end - start == (datetime(2027, 3, 28, 0, 30, tzinfo=UTC) - datetime(2027, 3, 28, 0, 0, tzinfo=UTC))


def test_a_long_visit_must_fit_in_its_working_period():
    assert local_starts(date(2027, 5, 3), duration=60) == ["09:00", "09:30", "10:00", "10:30", "11:00"]


def test_booked_and_away_time_and_the_past_are_not_free():
    day = date(2027, 5, 3)
    starts = domain.slot_starts(SCHEDULE, day, BERLIN, 30)
    booked = Busy([(starts[1][0], starts[1][1]), (starts[3][0], starts[4][1])])
    free = domain.free_slots(SCHEDULE, [day], BERLIN, booked, duration_minutes=30, now=starts[0][0])
    assert [s.start.astimezone(BERLIN).strftime("%H:%M") for s in free] == ["10:00", "11:30"]


def test_only_a_future_slot_start_of_the_template_is_bookable():
    start = datetime(2027, 5, 3, 8, 0, tzinfo=UTC)  # 10:00 Berlin
    assert domain.check_bookable(SCHEDULE, start, CONSULT, BERLIN, LONG_AGO) == datetime(
        2027, 5, 3, 8, 30, tzinfo=UTC
    )
    with pytest.raises(FailedPrecondition, match=r"start_time: .* is not a slot"):
        domain.check_bookable(SCHEDULE, start.replace(minute=10), CONSULT, BERLIN, LONG_AGO)
    with pytest.raises(FailedPrecondition, match=r"start_time: .* is not a slot"):
        domain.check_bookable(
            SCHEDULE, datetime(2027, 5, 3, 9, 30, tzinfo=UTC), LONG, BERLIN, LONG_AGO
        )  # ends 12:30
    with pytest.raises(FailedPrecondition, match=r"start_time: .* is in the past"):
        domain.check_bookable(SCHEDULE, start, CONSULT, BERLIN, start)


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        (Schedule("d", 3), "schedule.slot_minutes"),
        (Schedule("d", 30, (WorkingHours(1, time(12), time(9)),)), "schedule.working_hours[0].end_time"),
        (
            Schedule("d", 30, (WorkingHours(1, time(9), time(12)), WorkingHours(1, time(11), time(13)))),
            "schedule.working_hours[1]",
        ),
        (Schedule("d", 30, (), (CONSULT, CONSULT)), "schedule.visit_types[1].code"),
        (Schedule("d", 30, (), (VisitType("X", "X", 45),)), "schedule.visit_types[0].duration_minutes"),
    ],
)
def test_a_bad_schedule_is_rejected_naming_the_field(schedule, field):
    with pytest.raises(InvalidArgument) as err:
        domain.check_schedule(schedule)
    assert err.value.violations[0].field == field


def test_transitions_say_why_they_are_refused():
    later, earlier = datetime(2027, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(FailedPrecondition, match="is CANCELLED"):
        domain.check_transition("CANCELLED", "COMPLETED", later, earlier)
    with pytest.raises(FailedPrecondition, match="after the start time"):
        domain.check_transition("CONFIRMED", "NO_SHOW", later, earlier)
    with pytest.raises(InvalidArgument, match="COMPLETED or NO_SHOW"):
        domain.check_transition("CONFIRMED", "CANCELLED", later, earlier)
    assert domain.check_cancel("CANCELLED", later, earlier) is False  # a retried cancel changes nothing
    with pytest.raises(FailedPrecondition, match="already started"):
        domain.check_cancel("CONFIRMED", earlier, later)


@pytest.mark.parametrize("day", [date(2027, 3, 28), date(2027, 10, 31), date(2027, 5, 3)])
def test_exactly_the_offered_slots_are_bookable(day):
    night_and_day = Schedule(
        "doc",
        15,
        (
            WorkingHours(day.isoweekday(), time(0, 30), time(4, 0)),
            WorkingHours(day.isoweekday(), time(9), time(12)),
        ),
        (CONSULT, LONG),
    )
    for visit in (CONSULT, LONG):
        offered = {s for s, _ in domain.slot_starts(night_and_day, day, BERLIN, visit.duration_minutes)}
        moment = datetime.combine(day, time(0), tzinfo=BERLIN).astimezone(UTC)
        for _ in range(24 * 4):  # every quarter hour of the day, in real time
            try:
                domain.check_bookable(night_and_day, moment, visit, BERLIN, LONG_AGO)
                bookable = True
            except FailedPrecondition:
                bookable = False
            assert bookable == (moment in offered), moment.astimezone(BERLIN)
            moment += timedelta(minutes=15)
