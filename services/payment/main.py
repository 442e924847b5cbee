"""Composition root of the payment service: settings -> database, provider adapters, invoices,
settlement (and its reconciler), appointment-event consumer -> servicer -> server."""

from __future__ import annotations

from datetime import timedelta

from clinic.payment.v1 import payment_service_pb2 as pb
from clinic.payment.v1 import payment_service_pb2_grpc as rpc
from clinic_platform.events import topic_for
from clinic_platform.outbox import Outbox
from clinic_platform.server import ServiceApp, run
from clinic_platform.settings import ServiceSettings
from payment import store
from payment.api import PaymentApi
from payment.consumers import AppointmentEvents
from payment.invoices import Invoices
from payment.payments import Payments
from payment.providers import adapters
from payment.settlement import Settlement


class Settings(ServiceSettings):
    service_name = "payment"

    clinic_currency: str = "EUR"  # for invoices of visit types without a fee
    payment_provider_url: str = "http://127.0.0.1:7101"
    # How long a charge may take before it counts as unanswered (the payment stays PENDING).
    payment_provider_timeout_seconds: float = 5.0
    # The reconciler settles payments and refunds left PENDING this long by a provider timeout.
    reconcile_every_seconds: float = 15.0
    reconcile_after_seconds: float = 10.0


def build(settings: Settings) -> ServiceApp:
    app = ServiceApp(settings)
    db = app.use_database(store.metadata)
    app.authenticate()
    http, providers = adapters(settings.payment_provider_url, settings.payment_provider_timeout_seconds)
    app.on_shutdown(http.aclose)
    outbox = Outbox(store.metadata, settings.topic)
    invoices = Invoices(db, outbox, currency=settings.clinic_currency, zone=settings.clinic_time_zone)
    settlement = Settlement(db, outbox, invoices, providers)
    app.add_consumer([topic_for("appointments")], AppointmentEvents(invoices).handlers())
    app.background.append(
        lambda stopping: settlement.reconcile(
            stopping,
            every_seconds=settings.reconcile_every_seconds,
            older_than=timedelta(seconds=settings.reconcile_after_seconds),
        )
    )
    app.add_servicer(
        rpc.add_PaymentServiceServicer_to_server,
        PaymentApi(db, invoices, Payments(db, settlement)),
        pb.DESCRIPTOR,
        "PaymentService",
    )
    return app


if __name__ == "__main__":
    run(build, Settings)
