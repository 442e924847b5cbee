"""The NotificationService servicer: proto <-> domain mapping. RPCs not built yet answer UNIMPLEMENTED."""

from clinic.notification.v1 import notification_service_pb2_grpc as rpc
from clinic_platform.db import Database


class NotificationApi(rpc.NotificationServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db
