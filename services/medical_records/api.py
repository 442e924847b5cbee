"""The MedicalRecordsService servicer: proto <-> domain mapping. RPCs not built yet answer UNIMPLEMENTED."""

from clinic.medical_records.v1 import medical_records_service_pb2_grpc as rpc
from clinic_platform.db import Database


class MedicalRecordsApi(rpc.MedicalRecordsServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db
