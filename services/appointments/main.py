"""Composition root of the appointments service: settings -> database and stores, user-event
projection -> servicer -> server."""

from __future__ import annotations

from appointments import store
from appointments.api import AppointmentsApi
from appointments.consumers import HANDLERS
from appointments.store.calendar import CalendarStore
from appointments.store.directory import DirectoryStore
from clinic.appointments.v1 import appointments_service_pb2 as pb
from clinic.appointments.v1 import appointments_service_pb2_grpc as rpc
from clinic_platform.events import topic_for
from clinic_platform.outbox import Outbox
from clinic_platform.server import ServiceApp, run
from clinic_platform.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name = "appointments"


def build(settings: Settings) -> ServiceApp:
    app = ServiceApp(settings)
    db = app.use_database(store.metadata)
    app.authenticate()
    app.add_consumer([topic_for("user_management")], HANDLERS)
    calendar = CalendarStore(db, Outbox(store.metadata, settings.topic))
    api = AppointmentsApi(DirectoryStore(db), calendar, settings.clinic_time_zone)
    app.add_servicer(rpc.add_AppointmentsServiceServicer_to_server, api, pb.DESCRIPTOR, "AppointmentsService")
    return app


if __name__ == "__main__":
    run(build, Settings)
