"""Composition root of the notification service: settings -> database -> servicer -> server."""

from clinic.notification.v1 import notification_service_pb2 as pb
from clinic.notification.v1 import notification_service_pb2_grpc as rpc
from clinic_platform.server import ServiceApp, run
from clinic_platform.settings import ServiceSettings
from notification import store
from notification.api import NotificationApi


class Settings(ServiceSettings):
    service_name = "notification"


def build(settings: Settings) -> ServiceApp:
    app = ServiceApp(settings)
    db = app.use_database(store.metadata)
    app.authenticate()
    app.add_servicer(
        rpc.add_NotificationServiceServicer_to_server,
        NotificationApi(db),
        pb.DESCRIPTOR,
        "NotificationService",
    )
    return app


if __name__ == "__main__":
    run(build, Settings)
