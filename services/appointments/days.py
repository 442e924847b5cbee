"""The clinic's days: the dates a request names ("today", YYYY-MM-DD, or a range) and where a
day begins, in the clinic's time zone."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from appointments.domain import days_between
from clinic_platform.convert import parse_day
from clinic_platform.errors import InvalidArgument


class ClinicDays:
    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone

    def day(self, value: str, field: str) -> date:
        if value.strip().lower() == "today":
            return datetime.now(self.zone).date()
        return parse_day(value, field)

    def start(self, day: date) -> datetime:
        """The instant (UTC) the local day begins."""
        return datetime.combine(day, datetime.min.time(), tzinfo=self.zone).astimezone(UTC)

    def requested(self, day: str, start_day: str, end_day: str, *, required: bool) -> list[date] | None:
        """The days of a request's `date`, or of its `start_date` to `end_date`; None when it names
        none and need not."""
        if day and (start_day or end_day):
            raise InvalidArgument("date", "give either date or start_date and end_date, not both")
        if day:
            return [self.day(day, "date")]
        if start_day or end_day:
            if not (start_day and end_day):
                raise InvalidArgument(
                    "end_date" if start_day else "start_date", "is required with the other end"
                )
            return days_between(self.day(start_day, "start_date"), self.day(end_day, "end_date"))
        if required:
            raise InvalidArgument("date", "give a date (YYYY-MM-DD or today) or start_date and end_date")
        return None
