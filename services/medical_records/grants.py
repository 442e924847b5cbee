"""Access requests, patient grants, revocation and break-the-glass: each audited in its own
transaction and published (ids only: RecordAccessRequested, RecordAccessGranted,
RecordAccessRevoked, EmergencyAccessUsed)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from google.protobuf.message import Message

from clinic.medical_records.v1 import events_pb2
from clinic_platform.auth import Caller, Role
from clinic_platform.convert import timestamp
from clinic_platform.db import Database
from clinic_platform.errors import AlreadyExists, FailedPrecondition, NotFound, PermissionDenied
from clinic_platform.outbox import Outbox
from medical_records import audit, policy, sealed_rows, store
from medical_records.crypto import DataKeyCache, FieldCipher
from medical_records.idempotent import Once
from medical_records.policy import Action, Basis
from medical_records.sealed_rows import open_text, seal_text
from medical_records.store import access as sql


def _uuid(value: str | None) -> uuid.UUID | None:
    return uuid.UUID(value) if value else None


class Grants:
    """Access requests, patient grants, revocation and break-the-glass; each audited and published."""

    def __init__(
        self, db: Database, outbox: Outbox, keys: DataKeyCache, *, emergency_hours: float, grant_days: float
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.keys = keys
        self.emergency = timedelta(hours=emergency_hours)
        self.longest_grant = timedelta(days=grant_days)

    async def _cipher(self, tx: store.Tx, patient_id: str, *, create: bool = False) -> FieldCipher | None:
        return await sealed_rows.cipher(tx, self.keys, patient_id, create=create)

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

    async def request(self, me: Caller, patient_id: str, reason: str, *, once: Once) -> Message:
        if me.role not in policy.CLINICIANS:
            await self._refuse(
                me,
                patient_id,
                "CreateAccessRequest",
                PermissionDenied("only doctors and nurses ask for access"),
            )
        now = datetime.now(UTC)
        async with store.transaction(self.db) as tx:
            if (earlier := await once.earlier(tx, me)) is not None:
                return earlier
            await self._known_patient(tx, patient_id)
            if await sql.active_grant(tx.conn, uuid.UUID(patient_id), uuid.UUID(me.user_id), now):
                raise FailedPrecondition("you already have an active grant on this chart")
            cipher = await self._cipher(tx, patient_id, create=True)
            request_id = uuid.uuid4()
            sealed = seal_text(cipher, "access_requests", str(request_id), "reason", reason)
            row = await sql.insert_request(
                tx.conn, request_id, uuid.UUID(patient_id), uuid.UUID(me.user_id), sealed, now
            )
            if row is None:
                raise AlreadyExists("you already have a pending access request for this chart")
            request = to_request(row, cipher)
            event = events_pb2.RecordAccessRequested(
                access_request_id=request.id,
                patient_id=patient_id,
                requester_id=me.user_id,
                request_time=timestamp(now),
            )
            await self.outbox.add(tx.session, event, aggregate_id=patient_id)
            await self._log(tx, me, patient_id, "CreateAccessRequest", reason=log_reason(cipher, reason))
            return await once.done(tx, me, request)

    async def deny(self, me: Caller, patient_id: str, request_id: str) -> policy.AccessRequest:
        if me.role is not Role.PATIENT or me.user_id != patient_id:
            await self._refuse(me, patient_id, "DenyAccessRequest", _not_the_patient(me, patient_id))
        now = datetime.now(UTC)
        async with store.transaction(self.db) as tx:
            row = await sql.request(tx.conn, uuid.UUID(patient_id), uuid.UUID(request_id), lock=True)
            if row is None:
                raise NotFound(f"access request {request_id} not found")
            cipher = await self._cipher(tx, patient_id)
            policy.check_decidable(to_request(row, cipher))
            row = await sql.decide_request(tx.conn, row["id"], "DENIED", None, now)
            await self._log(tx, me, patient_id, "DenyAccessRequest")
        return to_request(row, cipher)

    async def grant(
        self,
        me: Caller,
        patient_id: str,
        grantee_id: str,
        access_request_id: str | None,
        expire_time: datetime | None,
        *,
        once: Once,
    ) -> Message:
        if me.role is not Role.PATIENT or me.user_id != patient_id:
            await self._refuse(me, patient_id, "CreateAccessGrant", _not_the_patient(me, patient_id))
        now = datetime.now(UTC)
        async with store.transaction(self.db) as tx:
            if (earlier := await once.earlier(tx, me)) is not None:
                return earlier  # a retry: the first answer, even once its expire_time has passed
            expire_time = policy.grant_end(expire_time, now, self.longest_grant)
            role = await sql.user_role(tx.conn, uuid.UUID(grantee_id))
            if role is None:
                raise NotFound(f"user {grantee_id} not found")
            if role not in ("DOCTOR", "NURSE"):
                raise FailedPrecondition("access is granted to doctors and nurses only")
            if access_request_id:
                row = await sql.request(
                    tx.conn, uuid.UUID(patient_id), uuid.UUID(access_request_id), lock=True
                )
                if row is None:
                    raise NotFound(f"access request {access_request_id} not found")
                policy.check_decidable(to_request(row, await self._cipher(tx, patient_id)), grantee_id)
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
                    _uuid(access_request_id),
                    "",
                    expire_time,
                    now,
                ),
            )
            if access_request_id:
                await sql.decide_request(tx.conn, uuid.UUID(access_request_id), "GRANTED", grant_id, now)
            event = events_pb2.RecordAccessGranted(
                access_grant_id=str(grant_id),
                patient_id=patient_id,
                grantee_id=grantee_id,
                access_request_id=access_request_id or "",
                expire_time=timestamp(expire_time),
                grant_time=timestamp(now),
            )
            await self.outbox.add(tx.session, event, aggregate_id=patient_id)
            await self._log(tx, me, patient_id, "CreateAccessGrant", basis=Basis.SELF, grant_id=str(grant_id))
            return await once.done(tx, me, to_grant(row, None))  # a patient's grant has no text

    async def revoke(self, me: Caller, patient_id: str, grant_id: str) -> policy.AccessGrant:
        if not ((me.role is Role.PATIENT and me.user_id == patient_id) or me.role is Role.ADMIN):
            await self._refuse(me, patient_id, "RevokeAccessGrant", _not_the_patient(me, patient_id))
        now = datetime.now(UTC)
        async with store.transaction(self.db) as tx:
            row = await sql.grant(tx.conn, uuid.UUID(patient_id), uuid.UUID(grant_id), lock=True)
            if row is None:
                raise NotFound(f"access grant {grant_id} not found")
            cipher = await self._cipher(tx, patient_id)
            if row["revoke_time"] is not None:
                return to_grant(row, cipher)
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
        return to_grant(row, cipher)

    async def break_glass(self, me: Caller, patient_id: str, justification: str) -> policy.AccessGrant:
        if me.role is not Role.DOCTOR:
            await self._refuse(me, patient_id, "BreakGlass", PermissionDenied("only doctors break the glass"))
        now = datetime.now(UTC)
        async with store.transaction(self.db) as tx:
            await self._known_patient(tx, patient_id)
            cipher = await self._cipher(tx, patient_id, create=True)
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
                    seal_text(cipher, "access_grants", str(grant_id), "justification", justification),
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
                reason=log_reason(cipher, justification),
                emergency=True,
            )
        return to_grant(row, cipher)

    async def _may_manage_access(self, me: Caller, patient_id: str, method: str) -> None:
        try:
            policy.may_manage_access(me, patient_id)
        except (NotFound, PermissionDenied) as refusal:
            await self._refuse(me, patient_id, method, refusal)

    async def list_requests(self, me: Caller, patient_id: str, status: str | None, after, limit: int):
        await self._may_manage_access(me, patient_id, "ListAccessRequests")
        mine = uuid.UUID(me.user_id) if me.role in policy.CLINICIANS else None
        async with store.transaction(self.db) as tx:
            rows = await sql.list_requests(tx.conn, uuid.UUID(patient_id), mine, status, after, limit)
            cipher = await self._cipher(tx, patient_id)
        return [to_request(r, cipher) for r in rows]

    async def list_grants(self, me: Caller, patient_id: str, after, limit: int):
        await self._may_manage_access(me, patient_id, "ListAccessGrants")
        mine = uuid.UUID(me.user_id) if me.role in policy.CLINICIANS else None
        async with store.transaction(self.db) as tx:
            rows = await sql.list_grants(tx.conn, uuid.UUID(patient_id), mine, after, limit)
            cipher = await self._cipher(tx, patient_id)
        return [to_grant(r, cipher) for r in rows]


def _not_the_patient(me: Caller, patient_id: str) -> Exception:
    if me.role is Role.PATIENT:
        return NotFound(f"no chart for patient {patient_id}")
    return PermissionDenied("only the patient decides who sees their chart")


def log_reason(cipher: FieldCipher, text: str) -> str:
    """A clinician's text copied into the access log: sealed, bound to the patient (the chain
    guards the entry it sits in)."""
    return seal_text(cipher, "access_log", "", "reason", text)


def to_request(row, cipher: FieldCipher | None) -> policy.AccessRequest:
    return policy.AccessRequest(
        id=str(row["id"]),
        patient_id=str(row["patient_id"]),
        requester_id=str(row["requester_id"]),
        reason=open_text(cipher, "access_requests", str(row["id"]), "reason", row["reason"]),
        status=row["status"],
        access_grant_id=str(row["access_grant_id"]) if row["access_grant_id"] else None,
        create_time=row["create_time"],
        decide_time=row["decide_time"],
    )


def to_grant(row, cipher: FieldCipher | None) -> policy.AccessGrant:
    return policy.AccessGrant(
        id=str(row["id"]),
        patient_id=str(row["patient_id"]),
        grantee_id=str(row["grantee_id"]),
        kind=row["kind"],
        access_request_id=str(row["access_request_id"]) if row["access_request_id"] else None,
        justification=open_text(
            cipher, "access_grants", str(row["id"]), "justification", row["justification"]
        ),
        expire_time=row["expire_time"],
        revoke_time=row["revoke_time"],
        create_time=row["create_time"],
    )
