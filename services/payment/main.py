"""Composition root of the payment service: settings -> database -> servicer -> server."""

from clinic.payment.v1 import payment_service_pb2 as pb
from clinic.payment.v1 import payment_service_pb2_grpc as rpc
from clinic_platform.server import ServiceApp, run
from clinic_platform.settings import ServiceSettings
from payment import store
from payment.api import PaymentApi


class Settings(ServiceSettings):
    service_name = "payment"


def build(settings: Settings) -> ServiceApp:
    app = ServiceApp(settings)
    db = app.use_database(store.metadata)
    app.authenticate()
    app.add_servicer(
        rpc.add_PaymentServiceServicer_to_server, PaymentApi(db), pb.DESCRIPTOR, "PaymentService"
    )
    return app


if __name__ == "__main__":
    run(build, Settings)
