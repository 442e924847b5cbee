"""Composition root of the medical records service: settings -> database -> servicer -> server."""

from clinic.medical_records.v1 import medical_records_service_pb2 as pb
from clinic.medical_records.v1 import medical_records_service_pb2_grpc as rpc
from clinic_platform.server import ServiceApp, run
from clinic_platform.settings import ServiceSettings
from medical_records import store
from medical_records.api import MedicalRecordsApi


class Settings(ServiceSettings):
    service_name = "medical_records"


def build(settings: Settings) -> ServiceApp:
    app = ServiceApp(settings)
    db = app.use_database(store.metadata)
    app.authenticate()
    app.add_servicer(
        rpc.add_MedicalRecordsServiceServicer_to_server,
        MedicalRecordsApi(db),
        pb.DESCRIPTOR,
        "MedicalRecordsService",
    )
    return app


if __name__ == "__main__":
    run(build, Settings)
