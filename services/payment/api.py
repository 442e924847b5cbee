"""The PaymentService servicer: proto <-> domain mapping. RPCs not built yet answer UNIMPLEMENTED."""

from clinic.payment.v1 import payment_service_pb2_grpc as rpc
from clinic_platform.db import Database


class PaymentApi(rpc.PaymentServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db
