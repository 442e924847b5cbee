"""Composition root of the reporting service: settings -> database -> servicer -> server."""

from clinic.reporting.v1 import reporting_service_pb2 as pb
from clinic.reporting.v1 import reporting_service_pb2_grpc as rpc
from clinic_platform.server import ServiceApp, run
from clinic_platform.settings import ServiceSettings
from reporting import store
from reporting.api import ReportingApi


class Settings(ServiceSettings):
    service_name = "reporting"


def build(settings: Settings) -> ServiceApp:
    app = ServiceApp(settings)
    db = app.use_database(store.metadata, publishes_events=False)
    app.authenticate()
    app.add_servicer(
        rpc.add_ReportingServiceServicer_to_server, ReportingApi(db), pb.DESCRIPTOR, "ReportingService"
    )
    return app


if __name__ == "__main__":
    run(build, Settings)
