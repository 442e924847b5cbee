"""A service process for the kit's shutdown test: the real bootstrap (`clinic_platform.server`)
serving the appointments contract with a GetAppointment that takes as long as asked.

    python -m tests.support.slow_service PORT GRACE_SECONDS
The appointment_id of a request is a UUID whose last group is the number of milliseconds the call
should take (`slow_id(1500)`): the kit validates ids like any service's."""

from __future__ import annotations

import asyncio
import logging
import sys

from clinic.appointments.v1 import appointments_service_pb2 as pb
from clinic.appointments.v1 import appointments_service_pb2_grpc as rpc
from clinic.appointments.v1 import resources_pb2
from clinic_platform.logging import configure_logging
from clinic_platform.server import ServiceApp, serve
from clinic_platform.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name = "appointments"


def slow_id(ms: int) -> str:
    return f"00000000-0000-4000-8000-{ms:012d}"


class SlowAppointments(rpc.AppointmentsServiceServicer):
    async def GetAppointment(self, request, context):
        ms = int(request.appointment_id.rsplit("-", 1)[1])
        logging.getLogger("slow").info("call started", extra={"ms": ms})
        await asyncio.sleep(ms / 1000)
        return pb.GetAppointmentResponse(appointment=resources_pb2.Appointment(id=request.appointment_id))


def main() -> None:
    port, grace = int(sys.argv[1]), float(sys.argv[2])
    settings = Settings(grpc_port=port, shutdown_grace_seconds=grace)
    configure_logging("slow_service")
    app = ServiceApp(settings)
    app.add_servicer(
        rpc.add_AppointmentsServiceServicer_to_server,
        SlowAppointments(),
        pb.DESCRIPTOR,
        "AppointmentsService",
    )
    asyncio.run(serve(app))


if __name__ == "__main__":
    main()
