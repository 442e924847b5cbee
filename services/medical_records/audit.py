"""The access log: every read, write, denial, request, grant, revocation and emergency use of a
chart, appended in the transaction of what it records, hash-chained, never updated or deleted.

    python -m medical_records.audit verify     # walks the chain; names the first broken entry

An entry's hash is sha256(previous hash || sequence as 8 bytes || payload), where the payload is
the canonical JSON of the entry's columns (`payload`); the first entry's previous hash is 32 zero
bytes. Changing, inserting or removing an entry breaks the chain at that entry; removing the tail
shows as a chain shorter than its head (`access_log_head`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sys
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from clinic_platform.auth import Caller
from clinic_platform.context import current_request_id
from clinic_platform.db import Database
from clinic_platform.errors import Unavailable
from medical_records import policy, sealed_rows, store
from medical_records.crypto import DataKeyCache
from medical_records.policy import Action, Basis, Decision, LogEntry
from medical_records.store import audit as sql

GENESIS = bytes(32)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """What happened, before it has a place in the chain."""

    patient_id: str | None
    actor: Caller
    action: Action
    method: str
    outcome: str  # ALLOWED, DENIED, INTEGRITY_ERROR
    basis: Basis = Basis.NONE
    grant_id: str | None = None
    reason: str = ""
    emergency: bool = False
    # Taken where the event happens: batched entries are written by another task.
    request_id: str = field(default_factory=lambda: current_request_id() or "")

    @classmethod
    def of(
        cls, decision: Decision, patient_id: str, me: Caller, action: Action, method: str, *, reason: str = ""
    ):
        return cls(
            patient_id,
            me,
            action,
            method,
            "ALLOWED" if decision.allowed else "DENIED",
            decision.basis,
            decision.grant_id,
            reason,
            decision.emergency,
        )


def payload(values: dict) -> bytes:
    return json.dumps(values, sort_keys=True, separators=(",", ":")).encode()


def entry_values(entry_id: str, event: Event, now: datetime) -> dict:
    return {
        "id": entry_id,
        "patient_id": event.patient_id,
        "actor_id": event.actor.user_id,
        "actor_role": str(event.actor.role),
        "action": str(event.action),
        "basis": str(event.basis),
        "access_grant_id": event.grant_id,
        "method": event.method,
        "outcome": event.outcome,
        "reason": event.reason,
        "request_id": event.request_id,
        "emergency": event.emergency,
        "create_time": now.astimezone(UTC).isoformat(),
    }


def row_values(row) -> dict:
    """The payload's values as read back from a stored row."""
    return {
        "id": str(row["id"]),
        "patient_id": str(row["patient_id"]) if row["patient_id"] else None,
        "actor_id": str(row["actor_id"]),
        "actor_role": row["actor_role"],
        "action": row["action"],
        "basis": row["basis"],
        "access_grant_id": str(row["access_grant_id"]) if row["access_grant_id"] else None,
        "method": row["method"],
        "outcome": row["outcome"],
        "reason": row["reason"],
        "request_id": row["request_id"],
        "emergency": row["emergency"],
        "create_time": row["create_time"].astimezone(UTC).isoformat(),
    }


def chain_hash(previous: bytes, sequence: int, body: bytes) -> bytes:
    return hashlib.sha256(previous + sequence.to_bytes(8, "big", signed=True) + body).digest()


def _uuid(value: str | None) -> uuid.UUID | None:
    return uuid.UUID(value) if value else None


async def append(tx: store.Tx, event: Event, now: datetime | None = None) -> int:
    """Append `event` in `tx` (last in the transaction: the chain head stays locked until commit)."""
    now = now or datetime.now(UTC)
    values = entry_values(str(uuid.uuid4()), event, now)
    row = (
        uuid.UUID(values["id"]),
        _uuid(values["patient_id"]),
        uuid.UUID(values["actor_id"]),
        values["actor_role"],
        values["action"],
        values["basis"],
        _uuid(values["access_grant_id"]),
        values["method"],
        values["outcome"],
        values["reason"],
        values["request_id"],
        values["emergency"],
        now,
    )
    return await sql.append(tx.conn, row, payload(values))


async def record(db: Database, event: Event) -> None:
    """Append on its own (a denial, an integrity failure: nothing else is written)."""
    async with store.transaction(db) as tx:
        await append(tx, event)


class Batches:
    """Entries that record nothing else written (reads, denials), appended together: concurrent
    callers' entries share one transaction, one turn at the chain head and one commit (group
    commit). `await batches.append(event)` returns once the entry is committed, and raises
    Unavailable if it could not be, so content is never answered without its read logged."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.waiting: list[tuple[Event, datetime, asyncio.Future]] = []
        self.writer: asyncio.Task | None = None

    async def append(self, event: Event) -> None:
        done = asyncio.get_running_loop().create_future()
        self.waiting.append((event, datetime.now(UTC), done))
        if self.writer is None or self.writer.done():
            self.writer = asyncio.create_task(self._write())
        await done

    async def _write(self) -> None:
        while self.waiting:
            batch, self.waiting = self.waiting, []
            try:
                async with store.connection(self.db) as tx:
                    if len(batch) == 1:  # one statement is its own transaction: one round trip
                        await append(tx, batch[0][0], batch[0][1])
                    else:
                        async with tx.conn.transaction():
                            for event, now, _ in batch:
                                await append(tx, event, now)
            except Exception:
                log.exception("access log batch of %d entries failed", len(batch))
                failed = True
            else:
                failed = False
            for _, _, done in batch:
                if done.done():  # its caller went away
                    continue
                if failed:
                    done.set_exception(Unavailable("the access log cannot be written right now"))
                else:
                    done.set_result(None)


def to_entry(row) -> LogEntry:
    return LogEntry(
        sequence=row["sequence"],
        id=str(row["id"]),
        patient_id=str(row["patient_id"]) if row["patient_id"] else None,
        actor_id=str(row["actor_id"]),
        actor_role=row["actor_role"],
        action=row["action"],
        basis=row["basis"],
        access_grant_id=str(row["access_grant_id"]) if row["access_grant_id"] else None,
        method=row["method"],
        outcome=row["outcome"],
        reason=row["reason"],
        request_id=row["request_id"],
        emergency=row["emergency"],
        create_time=row["create_time"],
    )


class AuditLog:
    """Reading the log: a patient their own chart's entries, an admin any (metadata only)."""

    def __init__(self, db: Database, keys: DataKeyCache) -> None:
        self.db = db
        self.keys = keys

    async def entries(self, me: Caller, patient_id: str | None, actor_id: str | None, before, limit: int):
        """Entries newest first; a clinician's text in them is opened only for the chart's patient
        and its author, and blank for everyone else."""
        if (refusal := policy.log_refusal(me, patient_id)) is not None:
            await record(self.db, Event(patient_id, me, Action.READ, "ListAccessLogEntries", "DENIED"))
            raise refusal
        async with store.connection(self.db) as tx:
            rows = await sql.page(tx.conn, _uuid(patient_id), _uuid(actor_id), before, limit)
            entries, ciphers = [], {}
            for entry in map(to_entry, rows):
                if me.user_id in (entry.patient_id, entry.actor_id) and entry.patient_id:
                    if entry.patient_id not in ciphers:
                        ciphers[entry.patient_id] = await sealed_rows.cipher(
                            tx, self.keys, entry.patient_id, create=False
                        )
                    cipher = ciphers[entry.patient_id]
                    text = sealed_rows.open_text(cipher, "access_log", "", "reason", entry.reason)
                    entries.append(replace(entry, reason=text))
                else:
                    entries.append(policy.readable_entry(me, entry))
        return entries


@dataclass(frozen=True)
class Verdict:
    entries: int
    broken_at: int | None  # sequence of the first entry that does not match
    problem: str = ""

    @property
    def intact(self) -> bool:
        return self.broken_at is None


async def verify(conn, batch: int = 5000) -> Verdict:
    """Walk the chain from the first entry; stop at the first that does not match."""
    previous, expected, checked = GENESIS, 1, 0
    while True:
        rows = await sql.scan(conn, expected - 1, batch)
        for row in rows:
            sequence = row["sequence"]
            if sequence != expected:
                return Verdict(checked, expected, f"entry {expected} is missing")
            if bytes(row["previous_hash"]) != previous:
                return Verdict(checked, sequence, f"entry {sequence} does not follow entry {sequence - 1}")
            if chain_hash(previous, sequence, payload(row_values(row))) != bytes(row["hash"]):
                return Verdict(checked, sequence, f"entry {sequence} (id {row['id']}) was changed")
            previous, expected, checked = bytes(row["hash"]), expected + 1, checked + 1
        if len(rows) < batch:
            break
    head = await sql.head(conn)
    if head["sequence"] != checked or bytes(head["hash"]) != previous:
        return Verdict(
            checked, checked + 1, f"the chain ends at {checked} but its head says {head['sequence']}"
        )
    return Verdict(checked, None)


async def _main(argv: list[str]) -> int:
    from medical_records.settings import Settings

    if argv[:1] != ["verify"]:
        print("usage: python -m medical_records.audit verify   (DATABASE_URL names the database)")
        return 2
    conn = await store.connect(Settings().database_url)
    try:
        # One snapshot: entries appended while the walk runs must not look like a broken head.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            verdict = await verify(conn)
    finally:
        await conn.close()
    if verdict.intact:
        print(json.dumps({"intact": True, "entries": verdict.entries}))
        return 0
    print(
        json.dumps({"intact": False, "first_broken_sequence": verdict.broken_at, "problem": verdict.problem})
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(_main(sys.argv[1:])))
