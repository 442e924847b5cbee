"""The fan-out: a notice whose recipient is known becomes one delivery per channel the person
chose, rendered from the templates of that moment (an edited template that cannot render falls
back to the default). A notice whose person never becomes known is abandoned after a day."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from clinic_platform.db import Database
from notification import domain, store
from notification.domain import NotifierSettings

log = logging.getLogger(__name__)

ABANDON_AFTER = timedelta(hours=24)


class Fanout:
    def __init__(self, db: Database, settings: NotifierSettings) -> None:
        self.db = db
        self.clinic_name = settings.clinic_name
        self.zone = ZoneInfo(settings.zone)
        self.batch_size = settings.batch_size

    async def expand_notices(self) -> int:
        """Expand a batch of notices; returns how many."""
        now = datetime.now(UTC)
        async with self.db.transaction() as session:
            rows = await store.new_notices(session, self.batch_size)
            if rows:
                templates = await store.templates_in_use(session)
                names = await self._names(session, rows)
                deliveries = [
                    d for row in rows if row.active for d in self._deliveries(row, templates, names, now)
                ]
                await store.add_deliveries(session, [row.id for row in rows], deliveries)
            # A notice whose person never became known (deleted, or an event for nobody) stops waiting.
            await store.abandon_notices(session, now - ABANDON_AFTER)
        return len(rows)

    @staticmethod
    async def _names(session, rows) -> dict[str, str]:
        """Display names of the doctors and requesters the notices mention."""
        people = {row.variables.get(field) for row in rows for field in ("doctor_id", "requester_id")}
        people -= {None, ""}
        return await store.display_names(session, people) if people else {}

    def _deliveries(self, row, templates: dict, names: dict[str, str], now: datetime) -> list[dict]:
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
                    "subject": subject or self.clinic_name,
                    "body": plain,
                    "html": html if channel == domain.EMAIL else "",
                    "status": "PENDING",
                    "next_attempt_time": now,
                }
            )
        return deliveries

    def _variables(self, row, names: dict[str, str]) -> dict:
        """What templates may use: clinic, name, when / previous_when (clinic time), doctor,
        requester, record (whose chart), amount, decision."""
        given = dict(row.variables)
        values = {
            "clinic": self.clinic_name,
            "name": row.display_name,
            "amount": given.get("amount", ""),
            "decision": given.get("decision", ""),
            "doctor": "your doctor",
            "requester": "A clinician",
            "record": domain.whose_record(str(row.recipient_id), given.get("patient_id", "")),
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
