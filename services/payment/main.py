"""Composition root of the payment service: settings -> database, provider adapters, appointment
event consumer, reconciler -> servicer -> server."""

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
from payment.billing import STATE_OF_EVENT, Billing
from payment.providers import adapters


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
    billing = Billing(
        db,
        Outbox(store.metadata, settings.topic),
        currency=settings.clinic_currency,
        zone=settings.clinic_time_zone,
        providers=providers,
    )
    app.add_consumer(
        [topic_for("appointments")], {event: billing.on_appointment_event for event in STATE_OF_EVENT}
    )
    app.background.append(
        lambda stopping: billing.reconcile(
            stopping,
            every_seconds=settings.reconcile_every_seconds,
            older_than=timedelta(seconds=settings.reconcile_after_seconds),
        )
    )
    app.add_servicer(
        rpc.add_PaymentServiceServicer_to_server, PaymentApi(billing), pb.DESCRIPTOR, "PaymentService"
    )
    return app


if __name__ == "__main__":
    run(build, Settings)
