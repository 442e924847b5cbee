"""The UserManagementService servicer: proto <-> domain mapping. RPCs not built yet answer UNIMPLEMENTED."""

from clinic.user_management.v1 import user_management_service_pb2_grpc as rpc
from clinic_platform.db import Database


class UserManagementApi(rpc.UserManagementServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db
