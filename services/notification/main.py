"""Composition root of the notification service: settings -> database, channels, the consumer of
every topic a person hears about, the dispatcher -> servicer -> server."""

from __future__ import annotations

from datetime import timedelta

from clinic.notification.v1 import notification_service_pb2 as pb
from clinic.notification.v1 import notification_service_pb2_grpc as rpc
from clinic_platform.events import topic_for
from clinic_platform.outbox import Outbox
from clinic_platform.server import ServiceApp, run
from clinic_platform.settings import ServiceSettings
from notification import domain, store
from notification.api import NotificationApi
from notification.channels import Email, provider_channels
from notification.consumers import Consumers
from notification.dispatcher import Notifier
from notification.domain import NotifierSettings

SOURCES = ["user_management", "appointments", "payment", "insurance", "medical_records"]


class Settings(ServiceSettings):
    service_name = "notification"

    clinic_name: str = "Clinic Mesh Demo Clinic"
    reminder_lead_hours: float = 24.0
    # Email over SMTP (the local stack runs a mailbox on this port; production sets its relay).
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    smtp_start_tls: bool = False
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_sender: str = "Clinic Mesh <no-reply@clinic.example>"
    smtp_timeout_seconds: float = 10.0
    # SMS and push through the messaging provider's HTTP API.
    messaging_provider_url: str = "http://127.0.0.1:7103"
    messaging_provider_timeout_seconds: float = 5.0
    # A delivery that keeps failing is retried with backoff (base * 2^n, at most 5 min), then FAILED.
    notification_max_attempts: int = 8
    notification_retry_base_seconds: float = 2.0
    # The text (subject, body) of a delivery SENT or FAILED this long ago is blanked; its row stays
    # in the delivery log with status and times (Notifier.prune_bodies, run by the retention job).
    notification_body_retention_days: float = 30.0


def build(settings: Settings) -> ServiceApp:
    app = ServiceApp(settings)
    db = app.use_database(store.metadata)
    app.authenticate()
    email = Email(
        host=settings.smtp_host,
        port=settings.smtp_port,
        start_tls=settings.smtp_start_tls,
        username=settings.smtp_username,
        password=settings.smtp_password,
        sender=settings.smtp_sender,
        timeout=settings.smtp_timeout_seconds,
    )
    http, providers = provider_channels(
        settings.messaging_provider_url, settings.messaging_provider_timeout_seconds
    )
    app.on_shutdown(http.aclose)

    async def close_email() -> None:
        email.close()

    app.on_shutdown(close_email)
    notifier_settings = NotifierSettings(
        clinic_name=settings.clinic_name,
        zone=settings.clinic_time_zone,
        reminder_lead=timedelta(hours=settings.reminder_lead_hours),
        max_attempts=settings.notification_max_attempts,
        retry_base_seconds=settings.notification_retry_base_seconds,
        # A whole send gets as long as the slower channel's client waits for one step.
        send_timeout_seconds=max(settings.smtp_timeout_seconds, settings.messaging_provider_timeout_seconds),
    )
    notifier = Notifier(
        db,
        Outbox(store.metadata, settings.topic),
        {domain.EMAIL: email, **providers},
        notifier_settings,
        bootstrap=settings.kafka_bootstrap,
        one_record_per_batch=settings.kafka_one_record_per_batch,
    )
    # Every (event type, channel) has a template row an admin can edit; existing ones stay.
    app.on_start.append(lambda: store.seed_templates(db, domain.default_templates()))
    consumers = Consumers(notifier_settings, wake=notifier.wake)
    app.add_consumer([topic_for(source) for source in SOURCES], consumers.handlers())
    app.background.append(notifier.run)
    app.retention.add(
        "notification_bodies",
        notifier.prune_bodies,
        timedelta(days=settings.notification_body_retention_days),
    )
    app.add_servicer(
        rpc.add_NotificationServiceServicer_to_server,
        NotificationApi(db),
        pb.DESCRIPTOR,
        "NotificationService",
    )
    return app


if __name__ == "__main__":
    run(build, Settings)
