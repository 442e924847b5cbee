"""The ReportingService servicer: proto <-> domain mapping. RPCs not built yet answer UNIMPLEMENTED."""

from clinic.reporting.v1 import reporting_service_pb2_grpc as rpc
from clinic_platform.db import Database


class ReportingApi(rpc.ReportingServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db
