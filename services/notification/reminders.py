"""Appointment reminders: one per confirmed appointment time still ahead, due `reminder_lead`
before it. The event handlers schedule them (consumers.on_appointment, in the appointment event's
one statement); a round of the dispatcher turns the due ones into notices to the patient, unless
the appointment has begun."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from clinic_platform.db import Database, after_commit
from notification import store


def schedule(start: datetime, now: datetime, lead: timedelta, *, confirmed: bool) -> tuple[bool, datetime]:
    """Whether an appointment event schedules a reminder (a confirmed time still ahead; anything
    else cancels what is scheduled), and when it is sent."""
    return confirmed and start > now, start - lead


async def issue_due(db: Database, batch_size: int, wake: Callable[[], None]) -> int:
    """Due reminders of appointments still ahead become notices (once: the reminder's id is the
    notice's source); `wake` is called once they are committed. Returns how many were due."""
    now = datetime.now(UTC)
    async with db.transaction() as session:
        due = await store.due_reminders(session, now, batch_size)
        for reminder in due:
            ahead = reminder.appointment_start_time > now  # never remind of one already begun
            if ahead:
                variables = {
                    "start_time": reminder.appointment_start_time.isoformat(),
                    "doctor_id": str(reminder.doctor_id),
                    "visit_type": reminder.visit_type,
                }
                await store.add_notice(
                    session,
                    source_event_id=reminder.id,
                    recipient_id=reminder.patient_id,
                    event_type="APPOINTMENT_REMINDER",
                    variables=variables,
                    source=None,
                )
                after_commit(session, wake)
            await store.close_reminder(session, reminder.id, "SENT" if ahead else "CANCELLED", now)
    return len(due)
