"""From events to messages, in two steps that never send inside a consumer's transaction.

1. Event handlers (in the inbox transaction): keep the recipients projection and the reminder
   schedule, and write a *notice* per person to tell (unique per event and person).
2. The dispatcher (a background loop): fans notices out into *deliveries* once the person's
   contact details are known, turns due reminders into notices, and sends due deliveries —
   claimed with a lease, sent with an idempotency key derived from the delivery, retried with
   backoff, FAILED after `max_attempts` (NotificationFailed, and the source event to the DLQ).

Replicas share the work: a claim is exclusive while its lease lasts, and the lease outlives the
worst-case batch. A send starts only while the lease covers it to its end, and a result is
recorded only while the claim is still this replica's (its attempt number is the claim's token).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from clinic.appointments.v1 import events_pb2 as appointments
from clinic.insurance.v1 import events_pb2 as insurance
from clinic.insurance.v1 import resources_pb2 as insurance_resources
from clinic.medical_records.v1 import events_pb2 as records
from clinic.notification.v1 import events_pb2, resources_pb2
from clinic.payment.v1 import events_pb2 as payment
from clinic.payment.v1 import resources_pb2 as payment_resources
from clinic.user_management.v1 import events_pb2 as users
from clinic.user_management.v1 import resources_pb2 as user_resources
from clinic_platform import events
from clinic_platform.consumer import DeadLetters
from clinic_platform.convert import enum_name, enum_value, timestamp
from clinic_platform.db import Database, after_commit, raw_connection
from clinic_platform.events import EventEnvelope
from clinic_platform.money import from_proto
from clinic_platform.outbox import Outbox
from clinic_platform.wakeup import Wakeup
from notification import domain, store
from notification.channels import PermanentFailure, TemporaryFailure

log = logging.getLogger(__name__)

APPOINTMENT_MESSAGES = {
    appointments.AppointmentBooked: "APPOINTMENT_BOOKED",
    appointments.AppointmentRescheduled: "APPOINTMENT_RESCHEDULED",
    appointments.AppointmentCancelled: "APPOINTMENT_CANCELLED",
    appointments.AppointmentCompleted: "APPOINTMENT_COMPLETED",
}  # a no-show tells nobody; it only cancels the reminder
# Claims due deliveries for `lease` seconds on the database's clock (one clock for every replica).
# SKIP LOCKED passes over rows another replica is claiming; the outer conditions re-check a row
# whose claim committed meanwhile. Each claim's attempt number is new: the token results check.
CLAIM = text(
    "UPDATE deliveries SET next_attempt_time = now() + make_interval(secs => :lease),"
    " attempts = attempts + 1, update_time = now()"
    " WHERE id IN (SELECT id FROM deliveries WHERE status = 'PENDING' AND next_attempt_time <= now()"
    " ORDER BY next_attempt_time LIMIT :n FOR UPDATE SKIP LOCKED)"
    " AND status = 'PENDING' AND next_attempt_time <= now() RETURNING *"
)
# A subject is never empty before pruning (SMS and push take the clinic's name): it marks what is
# left to prune, and ix_deliveries_unpruned holds exactly those rows.
PRUNE_BODIES = text(
    "UPDATE deliveries SET subject = '', body = '', html = ''"
    " WHERE id IN (SELECT id FROM deliveries WHERE status IN ('SENT', 'FAILED') AND subject <> ''"
    " AND update_time < :older_than ORDER BY update_time LIMIT :n FOR UPDATE SKIP LOCKED)"
)
INVOICE_MESSAGES = {
    payment_resources.INVOICE_STATUS_DUE: "INVOICE_DUE",
    payment_resources.INVOICE_STATUS_PAID: "INVOICE_PAID",
}


@dataclass(frozen=True)
class NotifierSettings:
    clinic_name: str
    zone: str
    reminder_lead: timedelta
    max_attempts: int = 8
    retry_base_seconds: float = 2.0
    poll_seconds: float = 0.5
    batch_size: int = 50
    concurrency: int = 16
    # The most one send may take on any channel; a slower one is cut off as a temporary failure.
    send_timeout_seconds: float = 10.0
    # On top of the sends: time to record their results.
    lease_margin_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.concurrency < 1 or self.send_timeout_seconds <= 0:
            raise ValueError("batch_size, concurrency and send_timeout_seconds must be positive")

    @property
    def lease_seconds(self) -> float:
        """How long a claim lasts: a batch whose every send takes the full timeout, `concurrency`
        at a time, still ends inside it (50 / 16 at 10 s: 4 rounds, 45 s with the margin)."""
        rounds = math.ceil(self.batch_size / self.concurrency)
        return rounds * self.send_timeout_seconds + self.lease_margin_seconds


def _preferences(prefs: user_resources.NotificationPreferences) -> dict:
    kind, channel = user_resources.MessageKind, user_resources.Channel
    return {
        "messages": {
            enum_name(kind, m.kind): [enum_name(channel, c) for c in m.channels] for m in prefs.messages
        },
        "opted_out_channels": [enum_name(channel, c) for c in prefs.opted_out_channels],
    }


class Notifier:
    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        channels: dict,
        settings: NotifierSettings,
        *,
        bootstrap: str,
        one_record_per_batch: bool = False,
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.channels = channels
        self.settings = settings
        self.zone = ZoneInfo(settings.zone)
        self._wakeup = Wakeup()
        self._dead_letters = DeadLetters(
            bootstrap, "notification-dlq", one_record_per_batch=one_record_per_batch
        )

    def wake(self) -> None:
        self._wakeup.ring()

    def _wake_after_commit(self, session: AsyncSession) -> None:
        """What this transaction writes is work for the dispatcher once it is committed."""
        after_commit(session, self.wake)

    # -- 1. event handlers ---------------------------------------------------------------------------
    async def on_user_changed(self, session: AsyncSession, event, envelope: EventEnvelope) -> None:
        """Keep the person's contact details and channel choices (newest version wins)."""
        deactivated = (
            isinstance(event, users.UserUpdated) and event.status == user_resources.USER_STATUS_DEACTIVATED
        )
        values = {
            "id": uuid.UUID(event.user_id),
            "email": event.email,
            "phone_number": event.phone_number,
            "display_name": event.display_name or f"{event.given_name} {event.family_name}".strip(),
            "role": enum_name(user_resources.Role, event.role),
            "preferences": _preferences(event.notification_preferences),
            "active": not deactivated,
            "user_version": event.version,
        }
        statement = insert(store.recipients).values(**values)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["id"],
                set_={k: statement.excluded[k] for k in values if k != "id"},
                where=store.recipients.c.user_version < statement.excluded.user_version,
            )
        )
        self._wake_after_commit(session)  # notices may have been waiting for this person

    async def on_user_deactivated(self, session: AsyncSession, event, envelope: EventEnvelope) -> None:
        recipients = store.recipients.c
        await session.execute(
            update(store.recipients)
            .where(recipients.id == uuid.UUID(event.user_id), recipients.user_version < event.version)
            .values(active=False, user_version=event.version)
        )

    async def on_appointment(self, session: AsyncSession, event, envelope: EventEnvelope) -> None:
        """One reminder per confirmed appointment time (booking or moving schedules it, every other
        change cancels what is scheduled) and a notice to the patient, unless an event as new was
        applied already (telling an old one now would mislead). One statement: store.APPOINTMENT_EVENT."""
        variables = {
            "start_time": event.start_time.ToJsonString(),
            "doctor_id": event.doctor_id,
            "visit_type": event.visit_type,
        }
        if isinstance(event, appointments.AppointmentRescheduled):
            variables["previous_start_time"] = event.previous_start_time.ToJsonString()
        now = datetime.now(UTC)
        start = event.start_time.ToDatetime(tzinfo=UTC)
        confirmed = isinstance(event, appointments.AppointmentBooked | appointments.AppointmentRescheduled)
        conn = await raw_connection(session)
        await conn.fetchval(
            store.APPOINTMENT_EVENT,
            uuid.UUID(event.appointment_id),
            event.version,
            confirmed and start > now,
            now,
            uuid.uuid4(),
            uuid.UUID(event.patient_id),
            uuid.UUID(event.doctor_id),
            event.visit_type,
            start,
            start - self.settings.reminder_lead,
            uuid.uuid4(),
            uuid.UUID(envelope.id),
            APPOINTMENT_MESSAGES.get(type(event)),
            json.dumps(variables),
            *self._source_event(envelope, event),
        )
        self._wake_after_commit(session)

    @staticmethod
    def _source_event(envelope: EventEnvelope | None, event) -> tuple:
        """topic, type, key, payload and time of the event a notice comes from (NULLs for none)."""
        if envelope is None:
            return None, None, None, None, None
        return envelope.topic, envelope.type, envelope.key or "", event.SerializeToString(), envelope.time

    async def on_invoice_status_changed(self, session: AsyncSession, event, envelope: EventEnvelope) -> None:
        message = INVOICE_MESSAGES.get(event.new_status)
        if message:
            amount = str(from_proto(event.amount_due, "amount_due", allow_negative=True))
            await self.notice(
                session, envelope, event, event.patient_id, message, variables={"amount": amount}
            )

    async def on_refund_issued(self, session: AsyncSession, event, envelope: EventEnvelope) -> None:
        amount = str(from_proto(event.amount, "amount"))
        await self.notice(
            session, envelope, event, event.patient_id, "REFUND_ISSUED", variables={"amount": amount}
        )

    async def on_claim_adjudicated(self, session: AsyncSession, event, envelope: EventEnvelope) -> None:
        decision = enum_name(insurance_resources.ClaimStatus, event.status).replace("_", " ").lower()
        variables = {"decision": decision}
        await self.notice(
            session, envelope, event, event.patient_id, "CLAIM_ADJUDICATED", variables=variables
        )

    async def on_record_access(self, session: AsyncSession, event, envelope: EventEnvelope) -> None:
        if isinstance(event, records.EmergencyAccessUsed):
            variables = {"requester_id": event.doctor_id, "start_time": event.access_time.ToJsonString()}
            message = "EMERGENCY_ACCESS_USED"
        else:
            variables, message = {"requester_id": event.requester_id}, "RECORD_ACCESS_REQUESTED"
        await self.notice(session, envelope, event, event.patient_id, message, variables=variables)

    async def notice(
        self,
        session: AsyncSession,
        envelope: EventEnvelope | None,
        event,
        recipient_id: str,
        event_type: str,
        *,
        variables: dict,
        source_id: uuid.UUID | None = None,
    ) -> None:
        """Note that `recipient_id` must hear about this event (once: a repeat changes nothing).
        The source event is kept with it, to hand it to the DLQ if its messages fail for good."""
        conn = await raw_connection(session)
        await conn.execute(
            store.NOTICE,
            uuid.uuid4(),
            source_id or uuid.UUID(envelope.id),
            uuid.UUID(recipient_id),
            event_type,
            json.dumps(variables),
            *self._source_event(envelope, event),
        )
        self._wake_after_commit(session)

    # -- 2. the dispatcher ---------------------------------------------------------------------------
    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                busy = await self.expand_notices() + await self.issue_reminders() + await self.send_due()
            except Exception as exc:  # the database may be down: nothing is lost, try again
                log.warning("notification dispatcher round failed", extra={"error": repr(exc)})
                busy = 0
            if not busy:
                await self._wakeup.wait(stopping, self.settings.poll_seconds)
                self._wakeup.clear()
        await self._dead_letters.close()

    async def expand_notices(self) -> int:
        """Notices whose recipient is known become one delivery per chosen channel."""
        now = datetime.now(UTC)
        notices = store.notices.c
        async with self.db.transaction() as session:
            rows = (
                await session.execute(
                    select(store.notices, store.recipients)
                    .join(store.recipients, store.recipients.c.id == notices.recipient_id)
                    .where(notices.status == "NEW")
                    .order_by(notices.create_time)
                    .limit(self.settings.batch_size)
                    .with_for_update(of=store.notices, skip_locked=True)
                )
            ).all()
            if rows:
                templates = await self._templates(session)
                names = await self._names(session, rows)
                deliveries = [
                    d for row in rows if row.active for d in self._expand(row, templates, names, now)
                ]
                if deliveries:
                    await session.execute(
                        insert(store.deliveries).values(deliveries).on_conflict_do_nothing()
                    )
                await session.execute(
                    update(store.notices)
                    .where(store.notices.c.id.in_([row.id for row in rows]))
                    .values(status="EXPANDED")
                )
            # A notice whose person never became known (deleted, or an event for nobody) stops waiting.
            await session.execute(
                update(store.notices)
                .where(notices.status == "NEW", notices.create_time < now - timedelta(hours=24))
                .values(status="ABANDONED")
            )
        return len(rows)

    async def _templates(self, session: AsyncSession) -> dict[tuple[str, str], tuple[str, str]]:
        rows = (await session.execute(select(store.templates))).all()
        return {(r.event_type, r.channel): (r.subject, r.body) for r in rows}

    async def _names(self, session: AsyncSession, rows) -> dict[str, str]:
        """Display names of the doctors and requesters the notices mention, in one query."""
        ids = {row.variables.get(field) for row in rows for field in ("doctor_id", "requester_id")} - {
            None,
            "",
        }
        if not ids:
            return {}
        found = await session.execute(
            select(store.recipients.c.id, store.recipients.c.display_name).where(
                store.recipients.c.id.in_([uuid.UUID(i) for i in ids])
            )
        )
        return {str(person_id): name for person_id, name in found}

    def _expand(self, row, templates: dict, names: dict[str, str], now: datetime) -> list[dict]:
        """The notice's deliveries, one per channel the person chose, rendered."""
        variables = self._variables(row, names)
        deliveries = []
        for channel in domain.channels_for(row.event_type, row.preferences, has_phone=bool(row.phone_number)):
            default = domain.default_template(row.event_type, channel)
            try:
                subject, plain, html = domain.render(
                    *templates.get((row.event_type, channel), default), variables
                )
            except Exception:  # an edited template that cannot render must not hold up every message
                log.exception("template failed; the default is used", extra={"event_type": row.event_type})
                subject, plain, html = domain.render(*default, variables)
            address = {"EMAIL": row.email, "SMS": row.phone_number, "PUSH": str(row.recipient_id)}
            deliveries.append(
                {
                    "id": uuid.uuid4(),
                    "notice_id": row.id,
                    "source_event_id": row.source_event_id,
                    "recipient_id": row.recipient_id,
                    "channel": channel,
                    "event_type": row.event_type,
                    "address": address[channel],
                    "subject": subject or self.settings.clinic_name,
                    "body": plain,
                    "html": html if channel == domain.EMAIL else "",
                    "status": "PENDING",
                    "next_attempt_time": now,
                }
            )
        return deliveries

    def _variables(self, row, names: dict[str, str]) -> dict:
        """What templates may use: clinic, name, when / previous_when (clinic time), doctor,
        requester, amount, decision."""
        given = dict(row.variables)
        values = {
            "clinic": self.settings.clinic_name,
            "name": row.display_name,
            "amount": given.get("amount", ""),
            "decision": given.get("decision", ""),
            "doctor": "your doctor",
            "requester": "A clinician",
            "when": "",
            "previous_when": "",
        }
        for field, name in (("start_time", "when"), ("previous_start_time", "previous_when")):
            if given.get(field):
                moment = datetime.fromisoformat(given[field].replace("Z", "+00:00"))
                values[name] = domain.local_time(moment, self.zone)
        for field, name in (("doctor_id", "doctor"), ("requester_id", "requester")):
            values[name] = names.get(given.get(field) or "", values[name])
        return values

    async def issue_reminders(self) -> int:
        """Due reminders of appointments still ahead become notices (once: the reminder's id is
        the notice's source)."""
        now = datetime.now(UTC)
        reminders = store.reminders.c
        async with self.db.transaction() as session:
            due = (
                await session.execute(
                    select(store.reminders)
                    .where(reminders.status == "SCHEDULED", reminders.send_time <= now)
                    .limit(self.settings.batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for reminder in due:
                ahead = reminder.appointment_start_time > now  # never remind of one already begun
                if ahead:
                    variables = {
                        "start_time": reminder.appointment_start_time.isoformat(),
                        "doctor_id": str(reminder.doctor_id),
                        "visit_type": reminder.visit_type,
                    }
                    await self.notice(
                        session,
                        None,
                        None,
                        str(reminder.patient_id),
                        "APPOINTMENT_REMINDER",
                        variables=variables,
                        source_id=reminder.id,
                    )
                await session.execute(
                    update(store.reminders)
                    .where(reminders.id == reminder.id)
                    .values(status="SENT" if ahead else "CANCELLED", update_time=now)
                )
        return len(due)

    async def send_due(self) -> int:
        """Claim due deliveries (a lease: a crashed sender's claim runs out), send, record."""
        lease = self.settings.lease_seconds
        deadline = time.monotonic() + lease  # taken before the claim: it ends no later than the lease
        async with self.db.transaction() as session:
            claimed = (await session.execute(CLAIM, {"lease": lease, "n": self.settings.batch_size})).all()
        if not claimed:
            return 0
        gate = asyncio.Semaphore(self.settings.concurrency)

        async def send(delivery) -> None:
            async with gate:
                # The lease covers a normal batch; if recording stalled the batch (the database, a
                # DLQ write waiting for the broker), a send that could end after the lease is left
                # to the next claim: another replica may already be sending it.
                if time.monotonic() + self.settings.send_timeout_seconds > deadline:
                    log.warning("lease too short to send, left for a new claim", extra=_ids(delivery))
                    return
                await self._send(delivery)

        results = await asyncio.gather(*(send(d) for d in claimed), return_exceptions=True)
        for result in results:  # the database failed while recording: the dispatcher retries
            if isinstance(result, Exception):
                raise result
        return len(claimed)

    async def _send(self, delivery) -> None:
        """One attempt. Whatever goes wrong is this delivery's failure, never the batch's."""
        timeout = self.settings.send_timeout_seconds
        try:
            async with asyncio.timeout(timeout):  # every channel, however its client counts time
                await self.channels[delivery.channel].send(delivery)
        except PermanentFailure as exc:
            await self._failed(delivery, str(exc), permanent=True)
        except TemporaryFailure as exc:
            await self._failed(delivery, str(exc), permanent=False)
        except TimeoutError:
            await self._failed(delivery, f"no answer within {timeout:g} s", permanent=False)
        except Exception as exc:
            # A bug or an error no channel foresaw: a temporary failure, so the attempt cap ends it.
            # Only its class is told: its text may hold the address or the message.
            log.error("unexpected error sending a notification", extra=_ids(delivery, exc))
            await self._failed(delivery, "an unexpected error (see the service log)", permanent=False)
        else:
            await self._sent(delivery)

    def _ours(self, delivery) -> tuple:
        """The delivery, while the claim it was sent under is still the newest."""
        deliveries = store.deliveries.c
        return (
            deliveries.id == delivery.id,
            deliveries.attempts == delivery.attempts,
            deliveries.status == "PENDING",
        )

    def _event_fields(self, delivery) -> dict:
        return {
            "notification_id": str(delivery.id),
            "recipient_id": str(delivery.recipient_id),
            "channel": enum_value(resources_pb2.Channel, delivery.channel),
            "event_type": enum_value(resources_pb2.EventType, delivery.event_type),
            "source_event_id": str(delivery.source_event_id),
            "attempts": delivery.attempts,
        }

    async def _sent(self, delivery) -> None:
        """Recorded with its NotificationSent (on asyncpg: this runs once per message), only while
        the claim it was sent under is still the newest."""
        now = datetime.now(UTC)
        event = self.outbox.values(
            events_pb2.NotificationSent(**self._event_fields(delivery), send_time=timestamp(now)),
            aggregate_id=str(delivery.recipient_id),
        )
        pool = await self.db.pool()
        async with pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(store.RECORD_SENT, delivery.id, delivery.attempts, now) is None:
                log.warning("sent, but the claim had run out: the newer claim records", extra=_ids(delivery))
                return
            await conn.execute(store.ADD_EVENT, *event)
        self.db.events_written()

    async def _failed(self, delivery, reason: str, *, permanent: bool) -> None:
        now = datetime.now(UTC)
        final = permanent or delivery.attempts >= self.settings.max_attempts
        values = {"failure_reason": reason[:500], "update_time": now}
        if final:
            values["status"] = "FAILED"
        else:
            delay = domain.retry_delay(delivery.attempts, self.settings.retry_base_seconds)
            values["next_attempt_time"] = now + delay
        async with self.db.transaction() as session:
            recorded = await session.execute(
                update(store.deliveries).where(*self._ours(delivery)).values(**values)
            )
            if not recorded.rowcount:
                log.warning(
                    "failed, but the claim had run out: the newer claim records", extra=_ids(delivery)
                )
                return
            if final:
                event = events_pb2.NotificationFailed(
                    **self._event_fields(delivery), failure_reason=reason[:500], fail_time=timestamp(now)
                )
                await self.outbox.add(session, event, aggregate_id=str(delivery.recipient_id))
        if final:
            log.error("notification failed for good", extra=_ids(delivery) | {"reason": reason})
            await self._dead_letter(delivery, reason)
        else:
            log.warning("notification not sent yet, will retry", extra=_ids(delivery) | {"reason": reason})

    async def _dead_letter(self, delivery, reason: str) -> None:
        """The source event of a delivery that failed for good goes to its topic's DLQ."""
        async with self.db.engine.connect() as conn:
            source = (
                await conn.execute(
                    select(store.source_events).where(
                        store.source_events.c.event_id == delivery.source_event_id
                    )
                )
            ).first()
        if source is None:  # a reminder: no event of anyone else's to hand back
            return
        headers, key, value = events.encode(
            event_id=str(source.event_id),
            event_type=source.event_type,
            source=events.source_for(source.topic.split(".")[1]),
            time=source.event_time or datetime.now(UTC),
            key=source.aggregate_key,
            payload=source.payload,
        )
        await self._dead_letters.send(
            source.topic,
            key,
            value,
            headers,
            error=f"delivery {delivery.id} by {delivery.channel} failed: {reason}",
            consumer="notification",
            attempts=delivery.attempts,
        )

    # -- 3. retention -------------------------------------------------------------------------------
    async def prune_bodies(self, older_than: datetime, limit: int = 1000) -> int:
        """Blank the subject and text of up to `limit` deliveries that were SENT or FAILED before
        `older_than`; the row stays in the delivery log with its status, attempts and times.
        Returns how many it blanked (fewer than `limit`: nothing older is left)."""
        async with self.db.transaction() as session:
            pruned = await session.execute(PRUNE_BODIES, {"older_than": older_than, "n": limit})
        return pruned.rowcount


def _ids(delivery, error: Exception | None = None) -> dict:
    """What a log line may say of a delivery: ids and an error's class, never address or text."""
    fields = {"delivery": str(delivery.id), "channel": delivery.channel, "attempt": delivery.attempts}
    return fields | ({"error": type(error).__name__} if error is not None else {})


def handlers(notifier: Notifier) -> dict:
    """Consumer handlers: every event a person should hear about, plus the projections."""
    return {
        users.UserRegistered: notifier.on_user_changed,
        users.UserUpdated: notifier.on_user_changed,
        users.UserDeactivated: notifier.on_user_deactivated,
        **dict.fromkeys([*APPOINTMENT_MESSAGES, appointments.AppointmentNoShow], notifier.on_appointment),
        payment.InvoiceStatusChanged: notifier.on_invoice_status_changed,
        payment.RefundIssued: notifier.on_refund_issued,
        insurance.ClaimAdjudicated: notifier.on_claim_adjudicated,
        records.RecordAccessRequested: notifier.on_record_access,
        records.EmergencyAccessUsed: notifier.on_record_access,
    }
