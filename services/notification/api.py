"""The NotificationService servicer: the delivery log, templates and reminders."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, tuple_, update

from clinic.notification.v1 import notification_service_pb2 as pb
from clinic.notification.v1 import notification_service_pb2_grpc as rpc
from clinic.notification.v1 import resources_pb2
from clinic_platform import auth
from clinic_platform.auth import Role
from clinic_platform.convert import enum_value, mask_paths, parse_enum, parse_uuid, timestamp
from clinic_platform.db import Database
from clinic_platform.errors import NotFound, PermissionDenied
from clinic_platform.pagination import newest_first, newest_first_key, page_request
from notification import domain, store

MAX_PAGE = 200


def notification_message(row) -> resources_pb2.Notification:
    return resources_pb2.Notification(
        id=str(row.id),
        recipient_id=str(row.recipient_id),
        channel=enum_value(resources_pb2.Channel, row.channel),
        event_type=enum_value(resources_pb2.EventType, row.event_type),
        source_event_id=str(row.source_event_id),
        address=row.address,
        subject=row.subject,
        body=row.body,
        status=enum_value(resources_pb2.DeliveryStatus, row.status),
        attempts=row.attempts,
        failure_reason=row.failure_reason,
        create_time=timestamp(row.create_time),
        send_time=timestamp(row.send_time),
        update_time=timestamp(row.update_time),
    )


def template_message(row) -> resources_pb2.Template:
    return resources_pb2.Template(
        id=str(row.id),
        event_type=enum_value(resources_pb2.EventType, row.event_type),
        channel=enum_value(resources_pb2.Channel, row.channel),
        subject=row.subject,
        body=row.body,
        update_time=timestamp(row.update_time),
    )


def reminder_message(row) -> resources_pb2.Reminder:
    return resources_pb2.Reminder(
        id=str(row.id),
        appointment_id=str(row.appointment_id),
        patient_id=str(row.patient_id),
        appointment_start_time=timestamp(row.appointment_start_time),
        send_time=timestamp(row.send_time),
        status=enum_value(resources_pb2.ReminderStatus, row.status),
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )


def _filter(enum_type, value: str, field: str) -> str | None:
    return parse_enum(enum_type, value, field) if value else None


class NotificationApi(rpc.NotificationServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    async def _rows(self, query) -> list:
        async with self.db.engine.connect() as conn:
            return list((await conn.execute(query)).all())

    # -- the delivery log ---------------------------------------------------------------------------
    async def ListNotifications(self, request, context):
        me = auth.caller()
        recipient = str(parse_uuid(request.recipient_id, "recipient_id")) if request.recipient_id else ""
        if not me.has_role(Role.ADMIN):
            if recipient and recipient != me.user_id:
                raise PermissionDenied("only admins list other people's notifications")
            recipient = me.user_id
        filters = {
            "recipient_id": recipient or None,
            "channel": _filter(resources_pb2.Channel, request.channel, "channel"),
            "status": _filter(resources_pb2.DeliveryStatus, request.status, "status"),
            "event_type": _filter(resources_pb2.EventType, request.event_type, "event_type"),
        }
        page = page_request(request.page_size, request.page_token, filters, maximum=MAX_PAGE)
        table = store.deliveries
        conditions = [table.c[name] == value for name, value in filters.items() if value]
        rows, token = page.take(await self._rows(newest_first(table, page, *conditions)), newest_first_key)
        return pb.ListNotificationsResponse(
            notifications=[notification_message(r) for r in rows], next_page_token=token
        )

    async def GetNotification(self, request, context):
        me = auth.caller()
        notification_id = parse_uuid(request.notification_id, "notification_id")
        found = await self._rows(select(store.deliveries).where(store.deliveries.c.id == notification_id))
        if not found or (str(found[0].recipient_id) != me.user_id and not me.has_role(Role.ADMIN)):
            raise NotFound(f"notification {notification_id} not found")
        return pb.GetNotificationResponse(notification=notification_message(found[0]))

    # -- templates ----------------------------------------------------------------------------------
    async def ListTemplates(self, request, context):
        auth.require_role(Role.ADMIN)
        filters = {
            "event_type": _filter(resources_pb2.EventType, request.event_type, "event_type"),
            "channel": _filter(resources_pb2.Channel, request.channel, "channel"),
        }
        page = page_request(request.page_size, request.page_token, filters, maximum=MAX_PAGE)
        table = store.templates
        key = tuple_(table.c.event_type, table.c.channel)
        query = select(table).where(*(table.c[k] == v for k, v in filters.items() if v))
        if page.after:
            query = query.where(key > tuple_(*page.after))
        rows = await self._rows(query.order_by(table.c.event_type, table.c.channel).limit(page.size + 1))
        rows, token = page.take(rows, lambda r: [r.event_type, r.channel])
        return pb.ListTemplatesResponse(templates=[template_message(r) for r in rows], next_page_token=token)

    async def _template(self, template_id: str):
        auth.require_role(Role.ADMIN)
        wanted = parse_uuid(template_id, "template_id")
        found = await self._rows(select(store.templates).where(store.templates.c.id == wanted))
        if not found:
            raise NotFound(f"template {wanted} not found")
        return found[0]

    async def GetTemplate(self, request, context):
        return pb.GetTemplateResponse(template=template_message(await self._template(request.template_id)))

    async def UpdateTemplate(self, request, context):
        row = await self._template(request.template_id)
        paths = mask_paths(request.update_mask, {"subject", "body"})
        changes = {path: getattr(request.template, path) for path in paths}
        subject, body = changes.get("subject", row.subject), changes.get("body", row.body)
        domain.check_template(row.channel, subject, body)
        async with self.db.transaction() as session:
            updated = (
                await session.execute(
                    update(store.templates)
                    .where(store.templates.c.id == row.id)
                    .values(**changes, update_time=datetime.now(UTC))
                    .returning(store.templates)
                )
            ).one()
        return pb.UpdateTemplateResponse(template=template_message(updated))

    # -- reminders ----------------------------------------------------------------------------------
    async def ListReminders(self, request, context):
        me = auth.require_role(Role.PATIENT, Role.RECEPTIONIST, Role.ADMIN)
        patient = str(parse_uuid(request.patient_id, "patient_id")) if request.patient_id else None
        if me.has_role(Role.PATIENT):
            if patient and patient != me.user_id:
                raise PermissionDenied("a patient sees only their own reminders")
            patient = me.user_id
        appointment = request.appointment_id
        filters = {
            "patient_id": patient,
            "appointment_id": str(parse_uuid(appointment, "appointment_id")) if appointment else None,
            "status": _filter(resources_pb2.ReminderStatus, request.status, "status"),
        }
        page = page_request(request.page_size, request.page_token, filters, maximum=MAX_PAGE)
        table = store.reminders
        query = select(table).where(*(table.c[k] == v for k, v in filters.items() if v))
        if page.after:
            after = (datetime.fromisoformat(page.after[0]), page.after[1])
            query = query.where(tuple_(table.c.send_time, table.c.id) > tuple_(*after))
        rows = await self._rows(query.order_by(table.c.send_time, table.c.id).limit(page.size + 1))
        rows, token = page.take(rows, lambda r: [r.send_time.isoformat(), r.id])
        return pb.ListRemindersResponse(reminders=[reminder_message(r) for r in rows], next_page_token=token)
