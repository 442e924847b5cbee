"""A request id set in one service reaches the next one through the kit's client channel."""

from __future__ import annotations

import asyncio
import uuid

from clinic.appointments.v1 import appointments_service_pb2 as pb
from clinic.appointments.v1 import appointments_service_pb2_grpc as rpc
from clinic.appointments.v1 import resources_pb2
from clinic_platform import clients
from clinic_platform.context import current_request_id, request_id_var
from clinic_platform.server import ServiceApp, serve
from clinic_platform.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name = "appointments"


class EchoRequestId(rpc.AppointmentsServiceServicer):
    async def GetAppointment(self, request, context):
        return pb.GetAppointmentResponse(appointment=resources_pb2.Appointment(id=current_request_id() or ""))


async def test_the_callers_request_id_is_the_one_the_called_service_sees():
    app = ServiceApp(Settings(grpc_port=0))
    app.add_servicer(
        rpc.add_AppointmentsServiceServicer_to_server, EchoRequestId(), pb.DESCRIPTOR, "AppointmentsService"
    )
    stop, bound = asyncio.Event(), asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve(app, stop=stop, bound=bound.set_result))
    await asyncio.wait([bound, server], timeout=15, return_when=asyncio.FIRST_COMPLETED)
    port = bound.result()  # raises if the server failed to start
    try:
        async with clients.channel(f"127.0.0.1:{port}") as channel:
            stub = rpc.AppointmentsServiceStub(channel)
            token = request_id_var.set("req-from-the-caller")
            try:
                reply = await stub.GetAppointment(pb.GetAppointmentRequest(appointment_id=str(uuid.uuid4())))
            finally:
                request_id_var.reset(token)
            assert reply.appointment.id == "req-from-the-caller"
            # Without one, the called service makes its own.
            fresh = await stub.GetAppointment(pb.GetAppointmentRequest(appointment_id=str(uuid.uuid4())))
            assert fresh.appointment.id not in ("", "req-from-the-caller")
    finally:
        stop.set()
        await server
