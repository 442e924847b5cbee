"""Composition root of the user management service: settings -> database -> servicer -> server."""

from clinic.user_management.v1 import user_management_service_pb2 as pb
from clinic.user_management.v1 import user_management_service_pb2_grpc as rpc
from clinic_platform.server import ServiceApp, run
from clinic_platform.settings import ServiceSettings
from user_management import store
from user_management.api import UserManagementApi


class Settings(ServiceSettings):
    service_name = "user_management"


def build(settings: Settings) -> ServiceApp:
    app = ServiceApp(settings)
    db = app.use_database(store.metadata)
    app.add_servicer(
        rpc.add_UserManagementServiceServicer_to_server,
        UserManagementApi(db),
        pb.DESCRIPTOR,
        "UserManagementService",
    )
    return app


if __name__ == "__main__":
    run(build, Settings)
