"""The AppointmentsService servicer: the caller and the request in, the domain's rules (domain.py,
permissions.py) and the store's queries (store/) called by name, the answer out."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from appointments import availability, domain, events, permissions
from appointments.calendars import Calendars
from appointments.days import ClinicDays
from appointments.domain import Appointment
from appointments.messages import (
    appointment_message,
    doctor_message,
    schedule_message,
    time_off_message,
    updated_schedule,
)
from appointments.store.calendar import CalendarStore
from appointments.store.directory import DirectoryStore
from clinic.appointments.v1 import appointments_service_pb2 as pb
from clinic.appointments.v1 import appointments_service_pb2_grpc as rpc
from clinic.appointments.v1 import resources_pb2
from clinic_platform import auth, idempotency
from clinic_platform.auth import Role
from clinic_platform.convert import (
    enum_name,
    from_timestamp,
    mask_paths,
    parse_enum,
    parse_uuid,
    timestamp,
)
from clinic_platform.errors import Aborted, InvalidArgument, NotFound
from clinic_platform.pagination import page_request


class AppointmentsApi(rpc.AppointmentsServiceServicer):
    def __init__(self, directory: DirectoryStore, calendar: CalendarStore, zone: str) -> None:
        self.directory = directory
        self.calendar = calendar
        self.zone_name = zone
        self.zone = ZoneInfo(zone)
        self.days = ClinicDays(self.zone)
        self.calendars = Calendars(directory)

    # -- doctors and schedules --------------------------------------------------------------------
    async def ListDoctors(self, request, context):
        auth.caller()
        page = page_request(
            request.page_size, request.page_token, {"specialty": request.specialty}, maximum=200
        )
        doctors = await self.directory.list_doctors(request.specialty, page.after, page.size + 1)
        doctors, token = page.take(doctors, lambda d: [d.display_name, d.id])
        return pb.ListDoctorsResponse(doctors=[doctor_message(d) for d in doctors], next_page_token=token)

    async def GetDoctor(self, request, context):
        auth.caller()
        calendar = await self.calendars.get(parse_uuid(request.doctor_id, "doctor_id"))
        return pb.GetDoctorResponse(doctor=doctor_message(calendar))

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
        permissions.may_manage_calendar(me, str(doctor_id))
        paths = mask_paths(request.update_mask, {"working_hours", "slot_minutes", "visit_types"})
        current = (await self.calendars.get(doctor_id)).schedule
        schedule = updated_schedule(current, request.schedule, paths)
        domain.check_schedule(schedule)
        update_time = await self.directory.save_schedule(schedule, datetime.now(UTC))
        self.calendars.forget(doctor_id)
        calendar = await self.calendars.get(doctor_id)
        return pb.UpdateScheduleResponse(schedule=schedule_message(calendar, self.zone_name, update_time))

    # -- time off ---------------------------------------------------------------------------------
    async def CreateTimeOff(self, request, context):
        me = auth.caller()
        doctor_id = parse_uuid(request.doctor_id, "doctor_id")
        permissions.may_manage_calendar(me, str(doctor_id))
        await self.calendars.get(doctor_id)
        start = from_timestamp(request.time_off.start_time, "time_off.start_time")
        end = from_timestamp(request.time_off.end_time, "time_off.end_time")
        domain.check_time_off(start, end)
        keys, scope = self.calendar.keys, idempotency.scope("CreateTimeOff", me.user_id)
        try:
            async with self.calendar.transaction() as session:
                if request.request_id and (
                    earlier := await keys.claim(
                        session, scope, request.request_id, request, pb.CreateTimeOffResponse, what="time off"
                    )
                ):
                    return earlier
                reason = domain.time_off_reason(request.time_off.reason)
                time_off = await self.calendar.add_time_off(
                    session, doctor_id, start=start, end=end, reason=reason, by=me.user_id
                )
                answer = pb.CreateTimeOffResponse(time_off=time_off_message(time_off))
                if request.request_id:
                    await keys.remember(session, scope, request.request_id, answer)
        except domain.Overlap:
            raise domain.time_off_refused(await self.calendar.visits_between(doctor_id, start, end)) from None
        return answer

    async def ListTimeOff(self, request, context):
        me = auth.caller()
        doctor_id = parse_uuid(request.doctor_id, "doctor_id")
        permissions.may_see_time_off(me, str(doctor_id))
        await self.calendars.get(doctor_id)
        page = page_request(
            request.page_size, request.page_token, {"past": request.include_past}, maximum=200
        )
        time_off = await self.calendar.list_time_off(
            doctor_id,
            ending_after=None if request.include_past else datetime.now(UTC),
            after=page.after,
            limit=page.size + 1,
        )
        time_off, token = page.take(time_off, lambda t: [t.start_time.isoformat(), t.id])
        return pb.ListTimeOffResponse(time_off=[time_off_message(t) for t in time_off], next_page_token=token)

    async def DeleteTimeOff(self, request, context):
        me = auth.caller()
        doctor_id = parse_uuid(request.doctor_id, "doctor_id")
        permissions.may_manage_calendar(me, str(doctor_id))
        time_off_id = parse_uuid(request.time_off_id, "time_off_id")
        if not await self.calendar.delete_time_off(doctor_id, time_off_id):
            raise NotFound(f"time off {time_off_id} not found")
        return pb.DeleteTimeOffResponse()

    # -- slots ------------------------------------------------------------------------------------
    async def ListAvailableSlots(self, request, context):
        auth.caller()
        days = self.days.requested(request.date, request.start_date, request.end_date, required=True)
        if request.doctor_id:
            calendars = [await self.calendars.get(parse_uuid(request.doctor_id, "doctor_id"))]
        elif request.specialty:
            calendars = await self.calendars.of_specialty(request.specialty)
        else:
            raise InvalidArgument("doctor_id", "give a doctor_id or a specialty")
        lengths = availability.visit_lengths(
            calendars, request.visit_type, one_doctor=bool(request.doctor_id)
        )
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
        window_start, window_end = self.days.start(days[0]), self.days.start(days[-1] + timedelta(days=1))
        busy = await self.calendar.busy_intervals(list(lengths), window_start, window_end + timedelta(days=1))
        after = (datetime.fromisoformat(page.after[0]), page.after[1]) if page.after else None
        slots = availability.open_slots(
            calendars, lengths, busy, days, self.zone, now=datetime.now(UTC), after=after
        )
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
    async def CreateAppointment(self, request, context):
        me = auth.caller()
        wanted = request.appointment
        doctor_id = parse_uuid(wanted.doctor_id, "appointment.doctor_id")
        patient_id = parse_uuid(permissions.booking_patient(me, wanted.patient_id), "appointment.patient_id")
        start = from_timestamp(wanted.start_time, "appointment.start_time")
        if not wanted.visit_type:
            raise InvalidArgument("appointment.visit_type", "is required")
        domain.check_reason(wanted.reason_for_visit, "appointment.reason_for_visit")
        calendar = await self.calendars.get(doctor_id, field="appointment.doctor_id")
        visit = calendar.schedule.visit_type(wanted.visit_type)
        now = datetime.now(UTC)
        end = domain.check_bookable(calendar.schedule, start, visit, self.zone, now)
        if me.role is not Role.PATIENT and not await self.directory.patient_is_active(patient_id):
            raise NotFound(f"patient {patient_id} not found")
        appointment = Appointment(
            id=uuid.uuid4(),
            patient_id=patient_id,
            doctor_id=doctor_id,
            start_time=start,
            end_time=end,
            visit_type=visit.code,
            status=domain.CONFIRMED,
            reason=wanted.reason_for_visit,
            cancel_reason="",
            version=1,
            create_time=now,
            update_time=now,
            changed_by=uuid.UUID(me.user_id),
        )
        answer = pb.CreateAppointmentResponse(appointment=appointment_message(appointment))
        scope, retry_key = idempotency.scope("CreateAppointment", me.user_id), None
        if request.request_id:
            retry_key = self.calendar.keys.values(scope, request.request_id, request, answer)
        try:
            if await self.calendar.book(appointment, events.booked(appointment), retry_key):
                return answer
        except domain.Overlap as overlap:
            raise await self._refused(overlap, doctor_id, start, end) from None
        # A retry of a request already answered: the first answer (gone only if pruned meanwhile).
        earlier = await self.calendar.earlier_answer(
            scope, request.request_id, request, pb.CreateAppointmentResponse
        )
        if earlier is None:
            raise Aborted("this request_id's first answer has expired: retry with a new request_id")
        return earlier

    async def _refused(self, overlap: domain.Overlap, doctor_id, start: datetime, end: datetime):
        """The error for a booking or move the calendar refused (domain.booking_refused words it)."""
        visit = not overlap.patient and await self.calendar.visits_between(doctor_id, start, end) > 0
        return domain.booking_refused(overlap, visit)

    async def GetAppointment(self, request, context):
        me = auth.caller()
        appointment_id = parse_uuid(request.appointment_id, "appointment_id")
        appointment = await self.calendar.appointment(appointment_id)
        permissions.may_see(me, str(appointment.patient_id), str(appointment.doctor_id), str(appointment_id))
        return pb.GetAppointmentResponse(appointment=appointment_message(appointment))

    async def ListAppointments(self, request, context):
        me = auth.caller()
        doctor_id = str(parse_uuid(request.doctor_id, "doctor_id")) if request.doctor_id else ""
        patient_id = str(parse_uuid(request.patient_id, "patient_id")) if request.patient_id else ""
        doctor_id, patient_id = permissions.list_scope(me, doctor_id, patient_id)
        days = self.days.requested(request.date, request.start_date, request.end_date, required=False)
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
        appointments = await self.calendar.list_appointments(
            doctor_id=doctor_id or None,
            patient_id=patient_id or None,
            start=self.days.start(days[0]) if days else None,
            end=self.days.start(days[-1] + timedelta(days=1)) if days else None,
            status=status,
            after=page.after,
            limit=page.size + 1,
        )
        appointments, token = page.take(appointments, lambda a: [a.start_time.isoformat(), a.id])
        return pb.ListAppointmentsResponse(
            appointments=[appointment_message(a) for a in appointments], next_page_token=token
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
        current = await self.calendar.appointment(appointment_id)
        permissions.may_cancel_or_move(
            me, str(current.patient_id), str(current.doctor_id), str(appointment_id), move=True
        )
        domain.check_reschedule(current.status)
        calendar = await self.calendars.get(current.doctor_id)
        visit = calendar.schedule.visit_type(current.visit_type)
        end = domain.check_bookable(calendar.schedule, start, visit, self.zone, now)
        try:
            async with self.calendar.transaction() as session:
                locked = await self.calendar.locked_appointment(session, appointment_id)
                moved = domain.moved(locked, start, end, by=me.user_id, now=now)
                await self.calendar.save_move(session, moved, events.rescheduled(moved, locked))
        except domain.Overlap as overlap:
            raise await self._refused(overlap, current.doctor_id, start, end) from None
        return pb.UpdateAppointmentResponse(appointment=appointment_message(moved))

    async def _set_status(self, me: auth.Caller, appointment_id: uuid.UUID, target: str):
        now = datetime.now(UTC)
        async with self.calendar.transaction() as session:
            current = await self.calendar.locked_appointment(session, appointment_id)
            permissions.may_see(me, str(current.patient_id), str(current.doctor_id), str(appointment_id))
            permissions.may_set_status(me, target, str(current.doctor_id))
            domain.check_transition(current.status, target, current.start_time, now)
            changed = await self._save_status(session, current, target, by=me.user_id, now=now)
        return pb.UpdateAppointmentResponse(appointment=appointment_message(changed))

    async def CancelAppointment(self, request, context):
        me = auth.caller()
        appointment_id = parse_uuid(request.appointment_id, "appointment_id")
        domain.check_reason(request.reason, "reason")
        now = datetime.now(UTC)
        async with self.calendar.transaction() as session:
            current = await self.calendar.locked_appointment(session, appointment_id)
            permissions.may_cancel_or_move(
                me, str(current.patient_id), str(current.doctor_id), str(appointment_id), move=False
            )
            if not domain.check_cancel(current.status, current.start_time, now):
                return pb.CancelAppointmentResponse(appointment=appointment_message(current))
            changed = await self._save_status(
                session, current, domain.CANCELLED, by=me.user_id, now=now, reason=request.reason.strip()
            )
        return pb.CancelAppointmentResponse(appointment=appointment_message(changed))

    async def _save_status(self, session, current: Appointment, status: str, *, by: str, now, reason=""):
        changed = domain.with_status(current, status, by=by, now=now, reason=reason)
        await self.calendar.save_status(session, changed, events.status_changed(changed, by))
        return changed
