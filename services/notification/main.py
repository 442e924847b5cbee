"""Composition root of the notification service: settings -> database, channels, the consumer of
every topic a person hears about, the dispatcher -> servicer -> server."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.dialects.postgresql import insert

from clinic.notification.v1 import notification_service_pb2 as pb
from clinic.notification.v1 import notification_service_pb2_grpc as rpc
from clinic_platform.db import Database
from clinic_platform.events import topic_for
from clinic_platform.outbox import Outbox
from clinic_platform.server import ServiceApp, run
from clinic_platform.settings import ServiceSettings
from notification import domain, store
from notification.api import NotificationApi
from notification.channels import Email, provider_channels
from notification.notifier import Notifier, NotifierSettings, handlers

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


async def seed_templates(db: Database) -> None:
    """Every (event type, channel) has a template row an admin can edit; existing ones stay."""
    rows = []
    for event_type in domain.DEFAULTS:
        for channel in (domain.EMAIL, domain.SMS, domain.PUSH):
            subject, body = domain.default_template(event_type, channel)
            rows.append(
                {"id": uuid.uuid4(), "event_type": event_type, "channel": channel, "subject": subject}
                | {"body": body}
            )
    async with db.transaction() as session:
        await session.execute(insert(store.templates).values(rows).on_conflict_do_nothing())


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
    notifier = Notifier(
        db,
        Outbox(store.metadata, settings.topic),
        {domain.EMAIL: email, **providers},
        NotifierSettings(
            clinic_name=settings.clinic_name,
            zone=settings.clinic_time_zone,
            reminder_lead=timedelta(hours=settings.reminder_lead_hours),
            max_attempts=settings.notification_max_attempts,
            retry_base_seconds=settings.notification_retry_base_seconds,
            # A whole send gets as long as the slower channel's client waits for one step.
            send_timeout_seconds=max(
                settings.smtp_timeout_seconds, settings.messaging_provider_timeout_seconds
            ),
        ),
        bootstrap=settings.kafka_bootstrap,
        one_record_per_batch=settings.kafka_one_record_per_batch,
    )
    app.on_start.append(lambda: seed_templates(db))
    app.add_consumer([topic_for(source) for source in SOURCES], handlers(notifier))
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
