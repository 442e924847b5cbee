"""The gate every chart RPC passes: decide on the verified caller (medical_records.policy), audit
the outcome in the same transaction as the work (a write) or before any content leaves (a read),
and audit a refusal or an integrity failure on its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from clinic_platform.auth import Caller
from clinic_platform.db import Database
from clinic_platform.errors import PermissionDenied
from medical_records import audit, policy, store
from medical_records.crypto import DataLoss
from medical_records.policy import Action, Decision, Relationship
from medical_records.store import access as sql


class _Denied(Exception):
    def __init__(self, decision: Decision) -> None:
        self.decision = decision


class Gate:
    def __init__(self, db: Database, *, zone: str, care_days: float) -> None:
        self.db = db
        self.zone = ZoneInfo(zone)
        self.care_days = care_days
        self.batches = audit.Batches(db)

    async def relationship(self, tx: store.Tx, me: Caller, patient_id: str, now: datetime) -> Relationship:
        today = now.astimezone(self.zone).date()
        day_start = datetime.combine(today, time(), tzinfo=self.zone)
        row = await sql.relationship(
            tx.conn,
            uuid.UUID(patient_id),
            uuid.UUID(me.user_id),
            now,
            policy.care_window_start(now, self.care_days),
            day_start,
            day_start + timedelta(days=1),
        )
        return Relationship(
            row["patient_known"],
            row["care_relationship"],
            row["appointment_today"],
            str(row["grant_id"]) if row["grant_id"] else None,
            row["grant_kind"],
        )

    @asynccontextmanager
    async def chart(
        self, me: Caller, patient_id: str, action: Action, sections: frozenset, method: str
    ) -> AsyncIterator[tuple[store.Tx, Decision]]:
        """A transaction on `patient_id`'s chart if `me` may do `action` on `sections`. A write is
        appended to the log last in that transaction. A read writes nothing, so what it needs is
        weaker: its entry is committed before the caller gets any content; it goes through the
        group-committed `batches` after the (read-only) transaction, so reads of different charts
        do not queue for the chain head while their content is read. A refusal is logged on its
        own (also batched) and raised."""
        try:
            opened = store.connection(self.db) if action is Action.READ else store.transaction(self.db)
            async with opened as tx:
                now = datetime.now(UTC)
                decision = policy.decide(
                    me, patient_id, await self.relationship(tx, me, patient_id, now), action, sections
                )
                if not decision.allowed:
                    raise _Denied(decision)
                yield tx, decision
                if action is not Action.READ:
                    await audit.append(tx, audit.Event.of(decision, patient_id, me, action, method))
            if action is Action.READ:
                await self.batches.append(audit.Event.of(decision, patient_id, me, action, method))
        except _Denied as denied:
            await self.batches.append(audit.Event.of(denied.decision, patient_id, me, action, method))
            policy.refuse(denied.decision, patient_id)
        except PermissionDenied:
            # A rule of the chart refused after the gate let the caller in (amending another
            # doctor's note): a denial like any other, logged once the work has rolled back.
            await self.batches.append(audit.Event(patient_id, me, action, method, "DENIED"))
            raise
        except DataLoss:
            await self.batches.append(
                audit.Event(
                    patient_id, me, action, method, "INTEGRITY_ERROR", reason="integrity check failed"
                )
            )
            raise
