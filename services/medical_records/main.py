"""Composition root of the medical records service: settings -> database, KEK ring, projections of
user and appointment events -> access gate, chart reads and writes, grants, audit log -> servicer
-> server."""

from __future__ import annotations

from clinic.medical_records.v1 import medical_records_service_pb2 as pb
from clinic.medical_records.v1 import medical_records_service_pb2_grpc as rpc
from clinic_platform.events import topic_for
from clinic_platform.idempotency import IdempotencyKeys
from clinic_platform.outbox import Outbox
from clinic_platform.server import ServiceApp, run
from medical_records import store
from medical_records.api import MedicalRecordsApi
from medical_records.audit import AuditLog
from medical_records.chart_reads import ChartReads
from medical_records.chart_writes import ChartWrites
from medical_records.consumers import APPOINTMENT_HANDLERS, USER_HANDLERS
from medical_records.crypto import DataKeyCache, KeyRing
from medical_records.gate import Gate
from medical_records.grants import Grants
from medical_records.idempotent import Retries
from medical_records.settings import Settings


def build(settings: Settings) -> ServiceApp:
    if not settings.records_kek.get_secret_value():
        raise SystemExit("RECORDS_KEK is not set: the key-encryption key ('<id>:<base64 32 bytes>')")
    ring = KeyRing(settings.records_kek.get_secret_value(), settings.records_old_keks.get_secret_value())
    app = ServiceApp(settings)
    db = app.use_database(store.metadata)
    app.authenticate()
    app.add_consumer(
        [topic_for("user_management"), topic_for("appointments")], USER_HANDLERS | APPOINTMENT_HANDLERS
    )
    outbox = Outbox(store.metadata, settings.topic)
    gate = Gate(db, zone=settings.clinic_time_zone, care_days=settings.care_relationship_days)
    keys = DataKeyCache(ring)
    reads = ChartReads(gate, keys)
    api = MedicalRecordsApi(
        reads,
        ChartWrites(gate, keys, outbox, reads),
        Grants(
            db,
            outbox,
            keys,
            emergency_hours=settings.emergency_access_hours,
            grant_days=settings.access_grant_days,
        ),
        AuditLog(db, keys),
        Retries(IdempotencyKeys(store.metadata), keys),
    )
    app.add_servicer(
        rpc.add_MedicalRecordsServiceServicer_to_server, api, pb.DESCRIPTOR, "MedicalRecordsService"
    )
    return app


if __name__ == "__main__":
    run(build, Settings)
