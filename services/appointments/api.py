"""The AppointmentsService servicer: proto <-> domain mapping around the calendar rules."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg
from google.type import timeofday_pb2
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.exc import IntegrityError

from appointments import domain, store
from appointments.calendars import Calendars, DoctorCalendar
from appointments.domain import Busy, Schedule, VisitType, WorkingHours
from clinic.appointments.v1 import appointments_service_pb2 as pb
from clinic.appointments.v1 import appointments_service_pb2_grpc as rpc
from clinic.appointments.v1 import events_pb2, resources_pb2
from clinic_platform import auth
from clinic_platform.auth import Role
from clinic_platform.convert import (
    enum_name,
    enum_value,
    from_timestamp,
    mask_paths,
    parse_day,
    parse_enum,
    parse_uuid,
    timestamp,
)
from clinic_platform.db import Database
from clinic_platform.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from clinic_platform.outbox import Outbox
from clinic_platform.pagination import page_request


def appointment_message(row) -> resources_pb2.Appointment:
    return resources_pb2.Appointment(
        id=str(row.id),
        patient_id=str(row.patient_id),
        doctor_id=str(row.doctor_id),
        start_time=timestamp(row.start_time),
        end_time=timestamp(row.end_time),
        visit_type=row.visit_type,
        status=enum_value(resources_pb2.AppointmentStatus, row.status),
        reason_for_visit=row.reason,
        cancel_reason=row.cancel_reason,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )


def schedule_message(calendar: DoctorCalendar, zone: str, update_time=None) -> resources_pb2.Schedule:
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


def time_off_message(row) -> resources_pb2.TimeOff:
    return resources_pb2.TimeOff(
        id=str(row.id),
        doctor_id=str(row.doctor_id),
        start_time=timestamp(row.start_time),
        end_time=timestamp(row.end_time),
        reason=row.reason,
        create_time=timestamp(row.create_time),
    )


def _common_event_fields(row) -> dict:
    return {
        "appointment_id": str(row.id),
        "version": row.version,
        "patient_id": str(row.patient_id),
        "doctor_id": str(row.doctor_id),
        "start_time": timestamp(row.start_time),
        "end_time": timestamp(row.end_time),
        "visit_type": row.visit_type,
    }


def _clock(value: timeofday_pb2.TimeOfDay, field: str) -> time:
    try:
        return time(value.hours, value.minutes)
    except ValueError:
        raise InvalidArgument(field, f"{value.hours:02}:{value.minutes:02} is not a time of day") from None


def _constraint(error: IntegrityError) -> str:
    """Which constraint a failed insert or update violated (asyncpg reports its name)."""
    cause = getattr(error.orig, "__cause__", None)
    return getattr(cause, "constraint_name", "") or ""


class AppointmentsApi(rpc.AppointmentsServiceServicer):
    def __init__(self, db: Database, outbox: Outbox, zone: str) -> None:
        self.db = db
        self.outbox = outbox
        self.zone_name = zone
        self.zone = ZoneInfo(zone)
        self.calendars = Calendars(db)

    # -- days and times ---------------------------------------------------------------------------
    def _day(self, value: str, field: str) -> date:
        if value.strip().lower() == "today":
            return datetime.now(self.zone).date()
        return parse_day(value, field)

    def _day_start(self, day: date) -> datetime:
        return datetime.combine(day, datetime.min.time(), tzinfo=self.zone).astimezone(UTC)

    def _days(self, day: str, start_day: str, end_day: str, *, required: bool) -> list[date] | None:
        if day and (start_day or end_day):
            raise InvalidArgument("date", "give either date or start_date and end_date, not both")
        if day:
            return [self._day(day, "date")]
        if start_day or end_day:
            if not (start_day and end_day):
                raise InvalidArgument(
                    "end_date" if start_day else "start_date", "is required with the other end"
                )
            return domain.days_between(self._day(start_day, "start_date"), self._day(end_day, "end_date"))
        if required:
            raise InvalidArgument("date", "give a date (YYYY-MM-DD or today) or start_date and end_date")
        return None

    # -- doctors and schedules --------------------------------------------------------------------
    async def ListDoctors(self, request, context):
        auth.caller()
        page = page_request(
            request.page_size, request.page_token, {"specialty": request.specialty}, maximum=200
        )
        query = select(store.doctors).where(store.doctors.c.active)
        if request.specialty:
            query = query.where(func.lower(store.doctors.c.specialty) == request.specialty.strip().lower())
        if page.after:
            query = query.where(
                (store.doctors.c.display_name > page.after[0])
                | ((store.doctors.c.display_name == page.after[0]) & (store.doctors.c.id > page.after[1]))
            )
        query = query.order_by(store.doctors.c.display_name, store.doctors.c.id).limit(page.size + 1)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        rows, token = page.take(rows, lambda r: [r.display_name, r.id])
        doctors = [
            resources_pb2.Doctor(id=str(r.id), display_name=r.display_name, specialty=r.specialty)
            for r in rows
        ]
        return pb.ListDoctorsResponse(doctors=doctors, next_page_token=token)

    async def GetDoctor(self, request, context):
        auth.caller()
        calendar = await self.calendars.get(parse_uuid(request.doctor_id, "doctor_id"))
        return pb.GetDoctorResponse(
            doctor=resources_pb2.Doctor(
                id=str(calendar.doctor_id), display_name=calendar.display_name, specialty=calendar.specialty
            )
        )

    async def GetSchedule(self, request, context):
        auth.caller()
        doctor_id = parse_uuid(request.doctor_id, "doctor_id")
        self.calendars.forget(doctor_id)  # reads show the current template
        return pb.GetScheduleResponse(
            schedule=schedule_message(await self.calendars.get(doctor_id), self.zone_name)
        )

    async def UpdateSchedule(self, request, context):
        me = auth.caller()
        doctor_id = parse_uuid(request.doctor_id, "doctor_id")
        domain.may_manage_calendar(me, str(doctor_id))
        paths = mask_paths(request.update_mask, {"working_hours", "slot_minutes", "visit_types"})
        current = (await self.calendars.get(doctor_id)).schedule
        wanted = request.schedule
        schedule = Schedule(
            str(doctor_id),
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
        domain.check_schedule(schedule)
        values = {
            "slot_minutes": schedule.slot_minutes,
            "working_hours": [
                {"weekday": h.weekday, "start": h.start.strftime("%H:%M"), "end": h.end.strftime("%H:%M")}
                for h in schedule.working_hours
            ],
            "visit_types": [
                {"code": v.code, "name": v.name, "duration_minutes": v.duration_minutes}
                for v in schedule.visit_types
            ],
            "update_time": datetime.now(UTC),
        }
        async with self.db.transaction() as session:
            statement = upsert(store.schedules).values(doctor_id=doctor_id, version=1, **values)
            row = (
                await session.execute(
                    statement.on_conflict_do_update(
                        index_elements=["doctor_id"],
                        set_={**values, "version": store.schedules.c.version + 1},
                    ).returning(store.schedules)
                )
            ).one()
        self.calendars.forget(doctor_id)
        calendar = await self.calendars.get(doctor_id)
        return pb.UpdateScheduleResponse(schedule=schedule_message(calendar, self.zone_name, row.update_time))

    # -- time off ---------------------------------------------------------------------------------
    async def CreateTimeOff(self, request, context):
        me = auth.caller()
        doctor_id = parse_uuid(request.doctor_id, "doctor_id")
        domain.may_manage_calendar(me, str(doctor_id))
        await self.calendars.get(doctor_id)
        start = from_timestamp(request.time_off.start_time, "time_off.start_time")
        end = from_timestamp(request.time_off.end_time, "time_off.end_time")
        if end <= start:
            raise InvalidArgument("time_off.end_time", "must be after start_time")
        request_key = self._request_key(me, request.request_id)
        if request_key:
            existing = await self._by_request_key(request_key)
            if existing is not None:
                return pb.CreateTimeOffResponse(time_off=time_off_message(existing))
        try:
            async with self.db.transaction() as session:
                row = (
                    await session.execute(
                        insert(store.calendar)
                        .values(
                            id=uuid.uuid4(),
                            kind=store.TIME_OFF,
                            doctor_id=doctor_id,
                            start_time=start,
                            end_time=end,
                            status=store.BLOCKING,
                            reason=request.time_off.reason.strip()[:500],
                            changed_by=me.user_id,
                            version=1,
                            request_key=request_key,
                        )
                        .returning(store.calendar)
                    )
                ).one()
        except IntegrityError as error:
            if _constraint(error) != store.DOCTOR_OVERLAP:
                raise
            raise FailedPrecondition(await self._conflicts_message(doctor_id, start, end)) from None
        return pb.CreateTimeOffResponse(time_off=time_off_message(row))

    async def _conflicts_message(self, doctor_id, start: datetime, end: datetime) -> str:
        async with self.db.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(store.calendar.c.kind).where(
                        store.calendar.c.doctor_id == doctor_id,
                        store.calendar.c.status.in_(store.DOCTOR_BUSY),
                        store.calendar.c.start_time < end,
                        store.calendar.c.end_time > start,
                    )
                )
            ).all()
        visits = sum(1 for r in rows if r.kind == store.APPOINTMENT)
        if visits:
            return f"{visits} confirmed appointment(s) in this period; cancel or move them first"
        return "this period overlaps time off that is already entered"

    async def ListTimeOff(self, request, context):
        me = auth.caller()
        doctor_id = parse_uuid(request.doctor_id, "doctor_id")
        if me.role not in (Role.ADMIN, Role.RECEPTIONIST) and me.user_id != str(doctor_id):
            raise PermissionDenied("only the doctor, the front desk and admins see time off")
        await self.calendars.get(doctor_id)
        page = page_request(
            request.page_size, request.page_token, {"past": request.include_past}, maximum=200
        )
        calendar = store.calendar
        query = select(calendar).where(calendar.c.doctor_id == doctor_id, calendar.c.kind == store.TIME_OFF)
        if not request.include_past:
            query = query.where(calendar.c.end_time > datetime.now(UTC))
        if page.after:
            query = query.where(
                (calendar.c.start_time > datetime.fromisoformat(page.after[0]))
                | (
                    (calendar.c.start_time == datetime.fromisoformat(page.after[0]))
                    & (calendar.c.id > page.after[1])
                )
            )
        async with self.db.engine.connect() as conn:
            rows = (
                await conn.execute(query.order_by(calendar.c.start_time, calendar.c.id).limit(page.size + 1))
            ).all()
        rows, token = page.take(rows, lambda r: [r.start_time.isoformat(), r.id])
        return pb.ListTimeOffResponse(time_off=[time_off_message(r) for r in rows], next_page_token=token)

    async def DeleteTimeOff(self, request, context):
        me = auth.caller()
        doctor_id = parse_uuid(request.doctor_id, "doctor_id")
        domain.may_manage_calendar(me, str(doctor_id))
        time_off_id = parse_uuid(request.time_off_id, "time_off_id")
        async with self.db.transaction() as session:
            deleted = await session.execute(
                delete(store.calendar).where(
                    store.calendar.c.id == time_off_id,
                    store.calendar.c.doctor_id == doctor_id,
                    store.calendar.c.kind == store.TIME_OFF,
                )
            )
        if deleted.rowcount == 0:
            raise NotFound(f"time off {time_off_id} not found")
        return pb.DeleteTimeOffResponse()

    # -- slots ------------------------------------------------------------------------------------
    async def ListAvailableSlots(self, request, context):
        auth.caller()
        days = self._days(request.date, request.start_date, request.end_date, required=True)
        if request.doctor_id:
            calendars = [await self.calendars.get(parse_uuid(request.doctor_id, "doctor_id"))]
        elif request.specialty:
            calendars = await self.calendars.of_specialty(request.specialty)
        else:
            raise InvalidArgument("doctor_id", "give a doctor_id or a specialty")
        durations = {}
        for calendar in calendars:
            schedule = calendar.schedule
            if not request.visit_type:
                durations[calendar.doctor_id] = schedule.slot_minutes
            elif request.doctor_id or any(v.code == request.visit_type for v in schedule.visit_types):
                durations[calendar.doctor_id] = schedule.visit_type(request.visit_type).duration_minutes
        page = page_request(
            request.page_size,
            request.page_token,
            {
                "doctor": request.doctor_id,
                "specialty": request.specialty,
                "days": [d.isoformat() for d in days],
                "visit_type": request.visit_type,
            },
            maximum=500,
        )
        window_start, window_end = self._day_start(days[0]), self._day_start(days[-1] + timedelta(days=1))
        async with self.db.engine.connect() as conn:
            busy = await store.busy_intervals(
                conn, list(durations), window_start, window_end + timedelta(days=1)
            )
        now = datetime.now(UTC)
        slots = sorted(
            (
                slot
                for calendar in calendars
                if calendar.doctor_id in durations
                for slot in domain.free_slots(
                    calendar.schedule,
                    days,
                    self.zone,
                    Busy(busy[calendar.doctor_id]),
                    duration_minutes=durations[calendar.doctor_id],
                    now=now,
                )
            ),
            key=lambda s: (s.start, s.doctor_id),
        )
        if page.after:
            after = (datetime.fromisoformat(page.after[0]), page.after[1])
            slots = [s for s in slots if (s.start, s.doctor_id) > after]
        slots, token = page.take(slots, lambda s: [s.start.isoformat(), s.doctor_id])
        return pb.ListAvailableSlotsResponse(
            slots=[
                resources_pb2.Slot(
                    doctor_id=s.doctor_id, start_time=timestamp(s.start), end_time=timestamp(s.end)
                )
                for s in slots
            ],
            next_page_token=token,
            time_zone=self.zone_name,
        )

    # -- appointments -----------------------------------------------------------------------------
    @staticmethod
    def _request_key(me: auth.Caller, request_id: str) -> str | None:
        if not request_id:
            return None
        try:
            uuid.UUID(request_id)
        except ValueError:
            raise InvalidArgument("request_id", "must be a UUID chosen by the client") from None
        return f"{me.user_id}:{request_id}"

    async def _by_request_key(self, request_key: str):
        async with self.db.engine.connect() as conn:
            return (
                await conn.execute(select(store.calendar).where(store.calendar.c.request_key == request_key))
            ).first()

    async def CreateAppointment(self, request, context):
        me = auth.caller()
        wanted = request.appointment
        doctor_id = parse_uuid(wanted.doctor_id, "appointment.doctor_id")
        patient_id = parse_uuid(domain.booking_patient(me, wanted.patient_id), "appointment.patient_id")
        start = from_timestamp(wanted.start_time, "appointment.start_time")
        if not wanted.visit_type:
            raise InvalidArgument("appointment.visit_type", "is required")
        if len(wanted.reason_for_visit) > domain.MAX_REASON:
            raise InvalidArgument(
                "appointment.reason_for_visit", f"must have at most {domain.MAX_REASON} characters"
            )
        calendar = await self.calendars.get(doctor_id, field="appointment.doctor_id")
        visit = calendar.schedule.visit_type(wanted.visit_type)
        now = datetime.now(UTC)
        end = domain.check_bookable(calendar.schedule, start, visit, self.zone, now)
        if me.role is not Role.PATIENT:
            await self._require_patient(patient_id)
        request_key = self._request_key(me, request.request_id)
        fingerprint = hashlib.sha256(
            f"{doctor_id}|{patient_id}|{start.isoformat()}|{visit.code}|{wanted.reason_for_visit}".encode()
        ).hexdigest()
        appointment_id = uuid.uuid4()
        event = events_pb2.AppointmentBooked(
            appointment_id=str(appointment_id),
            version=1,
            patient_id=str(patient_id),
            doctor_id=str(doctor_id),
            start_time=timestamp(start),
            end_time=timestamp(end),
            visit_type=visit.code,
            book_time=timestamp(now),
        )
        outbox = self.outbox.values(event, aggregate_id=str(appointment_id))
        pool = await self.db.pool()
        try:
            booked = await pool.fetchval(
                store.BOOK,
                appointment_id,
                doctor_id,
                patient_id,
                start,
                end,
                visit.code,
                wanted.reason_for_visit,
                uuid.UUID(me.user_id),
                request_key,
                fingerprint,
                now,
                *outbox,
            )
        except asyncpg.ExclusionViolationError as error:
            raise await self._booking_conflict(error.constraint_name, doctor_id, start, end) from None
        if booked is None:  # a retry of a request we already answered
            earlier = await self._by_request_key(request_key)
            if earlier is None or earlier.request_fingerprint != fingerprint:
                raise InvalidArgument("request_id", "was already used for a different booking")
            return pb.CreateAppointmentResponse(appointment=appointment_message(earlier))
        self.db.events_written()
        return pb.CreateAppointmentResponse(
            appointment=resources_pb2.Appointment(
                id=str(appointment_id),
                patient_id=str(patient_id),
                doctor_id=str(doctor_id),
                start_time=event.start_time,
                end_time=event.end_time,
                visit_type=visit.code,
                status=resources_pb2.APPOINTMENT_STATUS_CONFIRMED,
                reason_for_visit=wanted.reason_for_visit,
                create_time=event.book_time,
                update_time=event.book_time,
            )
        )

    async def _require_patient(self, patient_id: uuid.UUID) -> None:
        async with self.db.engine.connect() as conn:
            active = await conn.scalar(
                select(store.patients.c.active).where(store.patients.c.id == patient_id)
            )
        if not active:
            raise NotFound(f"patient {patient_id} not found")

    async def _booking_conflict(
        self, constraint: str, doctor_id, start: datetime, end: datetime
    ) -> Exception:
        """The error for a booking or move that hit one of the exclusion constraints."""
        if constraint == store.PATIENT_OVERLAP:
            return AlreadyExists("the patient already has an appointment at that time")
        pool = await self.db.pool()
        if await pool.fetchval(store.HAS_VISIT_BETWEEN, doctor_id, start, end):
            return AlreadyExists("time slot already booked")
        return FailedPrecondition("start_time: the doctor is away then (time off)")

    async def _appointment(self, session, appointment_id: uuid.UUID, *, lock: bool = False):
        query = select(store.calendar).where(
            store.calendar.c.id == appointment_id, store.calendar.c.kind == store.APPOINTMENT
        )
        row = (await session.execute(query.with_for_update() if lock else query)).first()
        if row is None:
            raise NotFound(f"appointment {appointment_id} not found")
        return row

    async def GetAppointment(self, request, context):
        me = auth.caller()
        appointment_id = parse_uuid(request.appointment_id, "appointment_id")
        async with self.db.sessions() as session:
            row = await self._appointment(session, appointment_id)
        domain.may_see(me, str(row.patient_id), str(row.doctor_id), str(appointment_id))
        return pb.GetAppointmentResponse(appointment=appointment_message(row))

    async def ListAppointments(self, request, context):
        me = auth.caller()
        doctor_id = str(parse_uuid(request.doctor_id, "doctor_id")) if request.doctor_id else ""
        patient_id = str(parse_uuid(request.patient_id, "patient_id")) if request.patient_id else ""
        doctor_id, patient_id = domain.list_scope(me, doctor_id, patient_id)
        days = self._days(request.date, request.start_date, request.end_date, required=False)
        status = (
            parse_enum(resources_pb2.AppointmentStatus, request.status, "status") if request.status else None
        )
        filters = {
            "doctor": doctor_id,
            "patient": patient_id,
            "days": request.date or f"{request.start_date}..{request.end_date}",
            "status": status,
        }
        page = page_request(request.page_size, request.page_token, filters, maximum=500)
        query = store.appointments_query(
            doctor_id=doctor_id or None,
            patient_id=patient_id or None,
            start=self._day_start(days[0]) if days else None,
            end=self._day_start(days[-1] + timedelta(days=1)) if days else None,
            status=status,
            after=page.after,
            limit=page.size,
        )
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        rows, token = page.take(rows, lambda r: [r.start_time.isoformat(), r.id])
        return pb.ListAppointmentsResponse(
            appointments=[appointment_message(r) for r in rows], next_page_token=token
        )

    async def UpdateAppointment(self, request, context):
        me = auth.caller()
        appointment_id = parse_uuid(request.appointment_id, "appointment_id")
        paths = mask_paths(request.update_mask, {"start_time", "status"})
        if len(paths) != 1:
            raise InvalidArgument("update_mask", "name exactly one of start_time (to move) or status")
        if "start_time" in paths:
            return await self._reschedule(
                me, appointment_id, from_timestamp(request.appointment.start_time, "appointment.start_time")
            )
        target = enum_name(resources_pb2.AppointmentStatus, request.appointment.status)
        return await self._set_status(me, appointment_id, target)

    async def _reschedule(self, me: auth.Caller, appointment_id: uuid.UUID, start: datetime):
        now = datetime.now(UTC)
        async with self.db.sessions() as session:
            current = await self._appointment(session, appointment_id)
        domain.may_cancel_or_move(
            me, str(current.patient_id), str(current.doctor_id), str(appointment_id), move=True
        )
        domain.check_reschedule(current.status)
        calendar = await self.calendars.get(current.doctor_id)
        visit = calendar.schedule.visit_type(current.visit_type)
        end = domain.check_bookable(calendar.schedule, start, visit, self.zone, now)
        try:
            async with self.db.transaction() as session:
                row = await self._appointment(session, appointment_id, lock=True)
                domain.check_reschedule(row.status)
                # One UPDATE moves the row: the old slot is freed only if the new one is taken.
                moved = (
                    await session.execute(
                        update(store.calendar)
                        .where(store.calendar.c.id == appointment_id)
                        .values(
                            start_time=start,
                            end_time=end,
                            version=row.version + 1,
                            update_time=now,
                            changed_by=me.user_id,
                        )
                        .returning(store.calendar)
                    )
                ).one()
                event = events_pb2.AppointmentRescheduled(
                    **_common_event_fields(moved),
                    previous_start_time=timestamp(row.start_time),
                    previous_end_time=timestamp(row.end_time),
                    reschedule_time=timestamp(now),
                )
                await self.outbox.add(session, event, aggregate_id=str(appointment_id))
        except IntegrityError as error:
            if _constraint(error) not in (store.DOCTOR_OVERLAP, store.PATIENT_OVERLAP):
                raise
            raise await self._booking_conflict(_constraint(error), current.doctor_id, start, end) from None
        return pb.UpdateAppointmentResponse(appointment=appointment_message(moved))

    async def _set_status(self, me: auth.Caller, appointment_id: uuid.UUID, target: str):
        now = datetime.now(UTC)
        async with self.db.transaction() as session:
            row = await self._appointment(session, appointment_id, lock=True)
            domain.may_see(me, str(row.patient_id), str(row.doctor_id), str(appointment_id))
            domain.may_set_status(me, target, str(row.doctor_id))
            domain.check_transition(row.status, target, row.start_time, now)
            changed = await self._change_status(session, row, target, now=now, by=me.user_id)
        return pb.UpdateAppointmentResponse(appointment=appointment_message(changed))

    async def _change_status(self, session, row, status: str, *, now: datetime, by: str, reason: str = ""):
        changed = (
            await session.execute(
                update(store.calendar)
                .where(store.calendar.c.id == row.id)
                .values(
                    status=status,
                    version=row.version + 1,
                    update_time=now,
                    changed_by=by,
                    cancel_reason=reason,
                )
                .returning(store.calendar)
            )
        ).one()
        fields = _common_event_fields(changed)
        if status == domain.CANCELLED:
            event = events_pb2.AppointmentCancelled(
                **fields, reason=reason, cancelled_by=by, cancel_time=timestamp(now)
            )
        elif status == domain.COMPLETED:
            event = events_pb2.AppointmentCompleted(**fields, complete_time=timestamp(now))
        else:
            event = events_pb2.AppointmentNoShow(**fields, mark_time=timestamp(now))
        await self.outbox.add(session, event, aggregate_id=str(row.id))
        return changed

    async def CancelAppointment(self, request, context):
        me = auth.caller()
        appointment_id = parse_uuid(request.appointment_id, "appointment_id")
        if len(request.reason) > domain.MAX_REASON:
            raise InvalidArgument("reason", f"must have at most {domain.MAX_REASON} characters")
        now = datetime.now(UTC)
        async with self.db.transaction() as session:
            row = await self._appointment(session, appointment_id, lock=True)
            domain.may_cancel_or_move(
                me, str(row.patient_id), str(row.doctor_id), str(appointment_id), move=False
            )
            if not domain.check_cancel(row.status, row.start_time, now):
                return pb.CancelAppointmentResponse(appointment=appointment_message(row))
            changed = await self._change_status(
                session, row, domain.CANCELLED, now=now, by=me.user_id, reason=request.reason.strip()
            )
        return pb.CancelAppointmentResponse(appointment=appointment_message(changed))
