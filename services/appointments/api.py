"""The AppointmentsService servicer: proto <-> domain mapping. RPCs not built yet answer UNIMPLEMENTED."""

from clinic.appointments.v1 import appointments_service_pb2_grpc as rpc
from clinic_platform.db import Database


class AppointmentsApi(rpc.AppointmentsServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db
