"""A service process for the kit's shutdown test: the real bootstrap (`clinic_platform.server`)
serving the appointments contract with a GetAppointment that takes as long as asked.

    python -m tests.support.slow_service PORT GRACE_SECONDS
The appointment_id of a request is the number of milliseconds the call should take."""

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


class SlowAppointments(rpc.AppointmentsServiceServicer):
    async def GetAppointment(self, request, context):
        logging.getLogger("slow").info("call started", extra={"ms": request.appointment_id})
        await asyncio.sleep(int(request.appointment_id) / 1000)
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
