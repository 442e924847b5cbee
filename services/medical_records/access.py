"""Access to charts: the gate every chart RPC passes (decide on the verified caller, audit the
outcome in the same transaction as the work, audit a denial on its own), and access requests,
patient grants, revocations and break-the-glass."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from clinic.medical_records.v1 import events_pb2
from clinic_platform.auth import Caller, Role
from clinic_platform.convert import timestamp
from clinic_platform.db import Database
from clinic_platform.errors import AlreadyExists, FailedPrecondition, NotFound, PermissionDenied
from clinic_platform.outbox import Outbox
from medical_records import audit, domain, store
from medical_records.crypto import DataLoss
from medical_records.domain import Action, Basis, Decision, Relationship
from medical_records.store import access as sql


class _Denied(Exception):
    def __init__(self, decision: Decision) -> None:
        self.decision = decision


def _uuid(value: str | None) -> uuid.UUID | None:
    return uuid.UUID(value) if value else None


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
            domain.care_window_start(now, self.care_days),
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
            async with store.transaction(self.db) as tx:
                now = datetime.now(UTC)
                decision = domain.decide(
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
            domain.refuse(denied.decision, patient_id)
        except DataLoss:
            await self.batches.append(
                audit.Event(
                    patient_id, me, action, method, "INTEGRITY_ERROR", reason="integrity check failed"
                )
            )
            raise


class Grants:
    """Access requests, patient grants, revocation and break-the-glass; each audited and published."""

    def __init__(self, db: Database, outbox: Outbox, gate: Gate, *, emergency_hours: float) -> None:
        self.db = db
        self.outbox = outbox
        self.gate = gate
        self.emergency = timedelta(hours=emergency_hours)

    async def _known_patient(self, tx: store.Tx, patient_id: str) -> None:
        if await sql.user_role(tx.conn, uuid.UUID(patient_id)) != "PATIENT":
            raise NotFound(f"no chart for patient {patient_id}")

    async def _log(
        self, tx, me, patient_id, method, *, basis=Basis.NONE, grant_id=None, reason="", emergency=False
    ):
        await audit.append(
            tx,
            audit.Event(
                patient_id, me, Action.ACCESS_CHANGE, method, "ALLOWED", basis, grant_id, reason, emergency
            ),
        )

    async def _refuse(self, me: Caller, patient_id: str, method: str, error: Exception) -> None:
        await audit.record(self.db, audit.Event(patient_id, me, Action.ACCESS_CHANGE, method, "DENIED"))
        raise error

    async def request(self, me: Caller, patient_id: str, reason: str) -> domain.AccessRequest:
        if me.role not in domain.CLINICIANS:
            await self._refuse(
                me,
                patient_id,
                "CreateAccessRequest",
                PermissionDenied("only doctors and nurses ask for access"),
            )
        now = datetime.now(UTC)
        async with store.transaction(self.db) as tx:
            await self._known_patient(tx, patient_id)
            if await sql.active_grant(tx.conn, uuid.UUID(patient_id), uuid.UUID(me.user_id), now):
                raise FailedPrecondition("you already have an active grant on this chart")
            row = await sql.insert_request(
                tx.conn, uuid.uuid4(), uuid.UUID(patient_id), uuid.UUID(me.user_id), reason, now
            )
            if row is None:
                raise AlreadyExists("you already have a pending access request for this chart")
            request = to_request(row)
            event = events_pb2.RecordAccessRequested(
                access_request_id=request.id,
                patient_id=patient_id,
                requester_id=me.user_id,
                request_time=timestamp(now),
            )
            await self.outbox.add(tx.session, event, aggregate_id=patient_id)
            await self._log(tx, me, patient_id, "CreateAccessRequest", reason=reason)
        return request

    async def deny(self, me: Caller, patient_id: str, request_id: str) -> domain.AccessRequest:
        if me.role is not Role.PATIENT or me.user_id != patient_id:
            await self._refuse(me, patient_id, "DenyAccessRequest", _not_the_patient(me, patient_id))
        now = datetime.now(UTC)
        async with store.transaction(self.db) as tx:
            row = await sql.request(tx.conn, uuid.UUID(patient_id), uuid.UUID(request_id), lock=True)
            if row is None:
                raise NotFound(f"access request {request_id} not found")
            domain.check_decidable(to_request(row))
            row = await sql.decide_request(tx.conn, row["id"], "DENIED", None, now)
            await self._log(tx, me, patient_id, "DenyAccessRequest")
        return to_request(row)

    async def grant(
        self,
        me: Caller,
        patient_id: str,
        grantee_id: str,
        request_id: str | None,
        expire_time: datetime | None,
    ) -> domain.AccessGrant:
        if me.role is not Role.PATIENT or me.user_id != patient_id:
            await self._refuse(me, patient_id, "CreateAccessGrant", _not_the_patient(me, patient_id))
        now = datetime.now(UTC)
        domain.check_expiry(expire_time, now)
        async with store.transaction(self.db) as tx:
            role = await sql.user_role(tx.conn, uuid.UUID(grantee_id))
            if role is None:
                raise NotFound(f"user {grantee_id} not found")
            if role not in ("DOCTOR", "NURSE"):
                raise FailedPrecondition("access is granted to doctors and nurses only")
            if request_id:
                row = await sql.request(tx.conn, uuid.UUID(patient_id), uuid.UUID(request_id), lock=True)
                if row is None:
                    raise NotFound(f"access request {request_id} not found")
                domain.check_decidable(to_request(row), grantee_id)
            if await sql.active_grant(tx.conn, uuid.UUID(patient_id), uuid.UUID(grantee_id), now):
                raise AlreadyExists("this clinician already has an active grant on your chart")
            grant_id = uuid.uuid4()
            row = await sql.insert_grant(
                tx.conn,
                (
                    grant_id,
                    uuid.UUID(patient_id),
                    uuid.UUID(grantee_id),
                    "PATIENT",
                    _uuid(request_id),
                    "",
                    expire_time,
                    now,
                ),
            )
            if request_id:
                await sql.decide_request(tx.conn, uuid.UUID(request_id), "GRANTED", grant_id, now)
            event = events_pb2.RecordAccessGranted(
                access_grant_id=str(grant_id),
                patient_id=patient_id,
                grantee_id=grantee_id,
                access_request_id=request_id or "",
                expire_time=timestamp(expire_time),
                grant_time=timestamp(now),
            )
            await self.outbox.add(tx.session, event, aggregate_id=patient_id)
            await self._log(tx, me, patient_id, "CreateAccessGrant", basis=Basis.SELF, grant_id=str(grant_id))
        return to_grant(row)

    async def revoke(self, me: Caller, patient_id: str, grant_id: str) -> domain.AccessGrant:
        if not ((me.role is Role.PATIENT and me.user_id == patient_id) or me.role is Role.ADMIN):
            await self._refuse(me, patient_id, "RevokeAccessGrant", _not_the_patient(me, patient_id))
        now = datetime.now(UTC)
        async with store.transaction(self.db) as tx:
            row = await sql.grant(tx.conn, uuid.UUID(patient_id), uuid.UUID(grant_id), lock=True)
            if row is None:
                raise NotFound(f"access grant {grant_id} not found")
            if row["revoke_time"] is not None:
                return to_grant(row)
            row = await sql.revoke_grant(tx.conn, row["id"], uuid.UUID(me.user_id), now)
            event = events_pb2.RecordAccessRevoked(
                access_grant_id=grant_id,
                patient_id=patient_id,
                grantee_id=str(row["grantee_id"]),
                revoked_by=me.user_id,
                revoke_time=timestamp(now),
            )
            await self.outbox.add(tx.session, event, aggregate_id=patient_id)
            await self._log(tx, me, patient_id, "RevokeAccessGrant", grant_id=grant_id)
        return to_grant(row)

    async def break_glass(self, me: Caller, patient_id: str, justification: str) -> domain.AccessGrant:
        if me.role is not Role.DOCTOR:
            await self._refuse(me, patient_id, "BreakGlass", PermissionDenied("only doctors break the glass"))
        now = datetime.now(UTC)
        async with store.transaction(self.db) as tx:
            await self._known_patient(tx, patient_id)
            grant_id = uuid.uuid4()
            expire = now + self.emergency
            row = await sql.insert_grant(
                tx.conn,
                (
                    grant_id,
                    uuid.UUID(patient_id),
                    uuid.UUID(me.user_id),
                    "EMERGENCY",
                    None,
                    justification,
                    expire,
                    now,
                ),
            )
            event = events_pb2.EmergencyAccessUsed(
                access_grant_id=str(grant_id),
                patient_id=patient_id,
                doctor_id=me.user_id,
                expire_time=timestamp(expire),
                access_time=timestamp(now),
            )
            await self.outbox.add(tx.session, event, aggregate_id=patient_id)
            await self._log(
                tx,
                me,
                patient_id,
                "BreakGlass",
                basis=Basis.EMERGENCY,
                grant_id=str(grant_id),
                reason=justification,
                emergency=True,
            )
        return to_grant(row)

    async def list_requests(self, me: Caller, patient_id: str, status: str | None, after, limit: int):
        domain.may_manage_access(me, patient_id)
        mine = uuid.UUID(me.user_id) if me.role in domain.CLINICIANS else None
        async with store.transaction(self.db) as tx:
            rows = await sql.list_requests(tx.conn, uuid.UUID(patient_id), mine, status, after, limit)
        return [to_request(r) for r in rows]

    async def list_grants(self, me: Caller, patient_id: str, after, limit: int):
        domain.may_manage_access(me, patient_id)
        mine = uuid.UUID(me.user_id) if me.role in domain.CLINICIANS else None
        async with store.transaction(self.db) as tx:
            rows = await sql.list_grants(tx.conn, uuid.UUID(patient_id), mine, after, limit)
        return [to_grant(r) for r in rows]


def _not_the_patient(me: Caller, patient_id: str) -> Exception:
    if me.role is Role.PATIENT:
        return NotFound(f"no chart for patient {patient_id}")
    return PermissionDenied("only the patient decides who sees their chart")


def to_request(row) -> domain.AccessRequest:
    return domain.AccessRequest(
        id=str(row["id"]),
        patient_id=str(row["patient_id"]),
        requester_id=str(row["requester_id"]),
        reason=row["reason"],
        status=row["status"],
        access_grant_id=str(row["access_grant_id"]) if row["access_grant_id"] else None,
        create_time=row["create_time"],
        decide_time=row["decide_time"],
    )


def to_grant(row) -> domain.AccessGrant:
    return domain.AccessGrant(
        id=str(row["id"]),
        patient_id=str(row["patient_id"]),
        grantee_id=str(row["grantee_id"]),
        kind=row["kind"],
        access_request_id=str(row["access_request_id"]) if row["access_request_id"] else None,
        justification=row["justification"],
        expire_time=row["expire_time"],
        revoke_time=row["revoke_time"],
        create_time=row["create_time"],
    )
