"""Composition root of the insurance service: settings -> database -> servicer -> server."""

from clinic.insurance.v1 import insurance_service_pb2 as pb
from clinic.insurance.v1 import insurance_service_pb2_grpc as rpc
from clinic_platform.server import ServiceApp, run
from clinic_platform.settings import ServiceSettings
from insurance import store
from insurance.api import InsuranceApi


class Settings(ServiceSettings):
    service_name = "insurance"


def build(settings: Settings) -> ServiceApp:
    app = ServiceApp(settings)
    db = app.use_database(store.metadata)
    app.authenticate()
    app.add_servicer(
        rpc.add_InsuranceServiceServicer_to_server, InsuranceApi(db), pb.DESCRIPTOR, "InsuranceService"
    )
    return app


if __name__ == "__main__":
    run(build, Settings)
