"""The InsuranceService servicer: proto <-> domain mapping. RPCs not built yet answer UNIMPLEMENTED."""

from clinic.insurance.v1 import insurance_service_pb2_grpc as rpc
from clinic_platform.db import Database


class InsuranceApi(rpc.InsuranceServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db
