"""The NotificationService servicer: the delivery log, templates and reminders."""

from __future__ import annotations

from datetime import UTC, datetime

from clinic.notification.v1 import notification_service_pb2 as pb
from clinic.notification.v1 import notification_service_pb2_grpc as rpc
from clinic.notification.v1 import resources_pb2
from clinic_platform import auth
from clinic_platform.auth import Role
from clinic_platform.convert import enum_value, mask_paths, parse_enum, parse_uuid, timestamp
from clinic_platform.db import Database
from clinic_platform.errors import NotFound
from clinic_platform.pagination import newest_first_key, page_request
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

    # -- the delivery log ---------------------------------------------------------------------------
    async def ListNotifications(self, request, context):
        me = auth.caller()
        recipient = str(parse_uuid(request.recipient_id, "recipient_id")) if request.recipient_id else ""
        recipient = domain.listed_recipient(recipient, me.user_id, admin=me.has_role(Role.ADMIN))
        filters = {
            "recipient_id": recipient or None,
            "channel": _filter(resources_pb2.Channel, request.channel, "channel"),
            "status": _filter(resources_pb2.DeliveryStatus, request.status, "status"),
            "event_type": _filter(resources_pb2.EventType, request.event_type, "event_type"),
        }
        page = page_request(request.page_size, request.page_token, filters, maximum=MAX_PAGE)
        rows = await store.list_notifications(self.db, page, filters)
        rows, token = page.take(rows, newest_first_key)
        return pb.ListNotificationsResponse(
            notifications=[notification_message(r) for r in rows], next_page_token=token
        )

    async def GetNotification(self, request, context):
        me = auth.caller()
        notification_id = parse_uuid(request.notification_id, "notification_id")
        found = await store.get_notification(self.db, notification_id)
        if found is None or not domain.may_read_notification(
            str(found.recipient_id), me.user_id, admin=me.has_role(Role.ADMIN)
        ):
            raise NotFound(f"notification {notification_id} not found")
        return pb.GetNotificationResponse(notification=notification_message(found))

    # -- templates ----------------------------------------------------------------------------------
    async def ListTemplates(self, request, context):
        auth.require_role(Role.ADMIN)
        filters = {
            "event_type": _filter(resources_pb2.EventType, request.event_type, "event_type"),
            "channel": _filter(resources_pb2.Channel, request.channel, "channel"),
        }
        page = page_request(request.page_size, request.page_token, filters, maximum=MAX_PAGE)
        rows = await store.list_templates(self.db, page, filters)
        rows, token = page.take(rows, lambda r: [r.event_type, r.channel])
        return pb.ListTemplatesResponse(templates=[template_message(r) for r in rows], next_page_token=token)

    async def _template(self, template_id: str):
        auth.require_role(Role.ADMIN)
        wanted = parse_uuid(template_id, "template_id")
        found = await store.get_template(self.db, wanted)
        if found is None:
            raise NotFound(f"template {wanted} not found")
        return found

    async def GetTemplate(self, request, context):
        return pb.GetTemplateResponse(template=template_message(await self._template(request.template_id)))

    async def UpdateTemplate(self, request, context):
        row = await self._template(request.template_id)
        paths = mask_paths(request.update_mask, {"subject", "body"})
        changes = {path: getattr(request.template, path) for path in paths}
        subject, body = changes.get("subject", row.subject), changes.get("body", row.body)
        domain.check_template(row.channel, subject, body)
        updated = await store.update_template(self.db, row.id, changes, datetime.now(UTC))
        return pb.UpdateTemplateResponse(template=template_message(updated))

    # -- reminders ----------------------------------------------------------------------------------
    async def ListReminders(self, request, context):
        me = auth.require_role(Role.PATIENT, Role.RECEPTIONIST, Role.ADMIN)
        patient = str(parse_uuid(request.patient_id, "patient_id")) if request.patient_id else None
        patient = domain.listed_patient(patient, me.user_id, patient=me.has_role(Role.PATIENT))
        appointment = request.appointment_id
        filters = {
            "patient_id": patient,
            "appointment_id": str(parse_uuid(appointment, "appointment_id")) if appointment else None,
            "status": _filter(resources_pb2.ReminderStatus, request.status, "status"),
        }
        page = page_request(request.page_size, request.page_token, filters, maximum=MAX_PAGE)
        rows = await store.list_reminders(self.db, page, filters)
        rows, token = page.take(rows, lambda r: [r.send_time.isoformat(), r.id])
        return pb.ListRemindersResponse(reminders=[reminder_message(r) for r in rows], next_page_token=token)
