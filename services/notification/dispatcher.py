"""The dispatcher (Notifier): a background loop, woken by commits that gave it work, that fans
notices out into deliveries (fanout.py), turns due reminders into notices (reminders.py), and sends
due deliveries: claimed with a lease, sent with an idempotency key derived from the delivery
(channels.py), retried with backoff, FAILED after `max_attempts` (NotificationFailed, and the
source event to the DLQ). Nothing is ever sent inside a consumer's transaction.

Replicas share the work: a claim is exclusive while its lease lasts, and the lease outlives the
worst-case batch. A send starts only while the lease covers it to its end, and a result is
recorded only while the claim is still this replica's (its attempt number is the claim's token).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from clinic.notification.v1 import events_pb2, resources_pb2
from clinic_platform import events
from clinic_platform.consumer import DeadLetters
from clinic_platform.convert import enum_value, timestamp
from clinic_platform.db import Database
from clinic_platform.outbox import Outbox
from clinic_platform.wakeup import Wakeup
from notification import domain, reminders, store
from notification.channels import PermanentFailure, TemporaryFailure
from notification.domain import NotifierSettings
from notification.fanout import Fanout

log = logging.getLogger(__name__)


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
        self.fanout = Fanout(db, settings)
        self._wakeup = Wakeup()
        self._dead_letters = DeadLetters(
            bootstrap, "notification-dlq", one_record_per_batch=one_record_per_batch
        )

    def wake(self) -> None:
        self._wakeup.ring()

    async def run(self, stopping: asyncio.Event) -> None:
        # Woken by commits (a wakeup-driven loop, not a periodic one): polls only when idle.
        while not stopping.is_set():
            try:
                busy = (
                    await self.fanout.expand_notices()
                    + await reminders.issue_due(self.db, self.settings.batch_size, self.wake)
                    + await self.send_due()
                )
            except Exception as exc:  # the database may be down: nothing is lost, try again
                log.warning("notification dispatcher round failed", extra={"error": repr(exc)})
                busy = 0
            if not busy:
                await self._wakeup.wait(stopping, self.settings.poll_seconds)
                self._wakeup.clear()
        await self._dead_letters.close()

    async def send_due(self) -> int:
        """Claim due deliveries (a lease: a crashed sender's claim runs out), send, record."""
        lease = self.settings.lease_seconds
        deadline = time.monotonic() + lease  # taken before the claim: it ends no later than the lease
        claimed = await store.claim_due(self.db, lease, self.settings.batch_size)
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
        """Recorded with its NotificationSent, only while the claim it was sent under is still the
        newest."""
        now = datetime.now(UTC)
        event = self.outbox.values(
            events_pb2.NotificationSent(**self._event_fields(delivery), send_time=timestamp(now)),
            aggregate_id=str(delivery.recipient_id),
        )
        if not await store.record_sent(self.db, delivery.id, delivery.attempts, now, event):
            log.warning("sent, but the claim had run out: the newer claim records", extra=_ids(delivery))

    async def _failed(self, delivery, reason: str, *, permanent: bool) -> None:
        now = datetime.now(UTC)
        stored = reason[:500]  # the log and the DLQ header get it whole
        final = permanent or delivery.attempts >= self.settings.max_attempts
        retry_at = None
        if not final:
            retry_at = now + domain.retry_delay(delivery.attempts, self.settings.retry_base_seconds)
        async with self.db.transaction() as session:
            if not await store.record_failure(
                session, delivery.id, delivery.attempts, stored, now, retry_at=retry_at
            ):
                log.warning(
                    "failed, but the claim had run out: the newer claim records", extra=_ids(delivery)
                )
                return
            if final:
                event = events_pb2.NotificationFailed(
                    **self._event_fields(delivery), failure_reason=stored, fail_time=timestamp(now)
                )
                await self.outbox.add(session, event, aggregate_id=str(delivery.recipient_id))
        if final:
            log.error("notification failed for good", extra=_ids(delivery) | {"reason": reason})
            await self._dead_letter(delivery, reason)
        else:
            log.warning("notification not sent yet, will retry", extra=_ids(delivery) | {"reason": reason})

    async def _dead_letter(self, delivery, reason: str) -> None:
        """The source event of a delivery that failed for good goes to its topic's DLQ."""
        source = await store.source_event(self.db, delivery.source_event_id)
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

    async def prune_bodies(self, older_than: datetime, limit: int = 1000) -> int:
        """Retention: blank the subject and text of up to `limit` deliveries that were SENT or
        FAILED before `older_than`; the row stays in the delivery log with its status, attempts and
        times. Returns how many it blanked (fewer than `limit`: nothing older is left)."""
        return await store.prune_bodies(self.db, older_than, limit)


def _ids(delivery, error: Exception | None = None) -> dict:
    """What a log line may say of a delivery: ids and an error's class, never address or text."""
    fields = {"delivery": str(delivery.id), "channel": delivery.channel, "attempt": delivery.attempts}
    return fields | ({"error": type(error).__name__} if error is not None else {})
