"""The kit's server bootstrap under SIGTERM, in a real process."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clinic.appointments.v1 import appointments_service_pb2 as pb
from clinic.appointments.v1 import appointments_service_pb2_grpc as rpc
from local_stack.components import grpc_serving
from local_stack.processes import wait_until
from local_stack.stack import free_port
from tests.support.slow_service import slow_id

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "clinic.appointments.v1.AppointmentsService"
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def slow_service(tmp_path):
    port = free_port()
    log = tmp_path / "slow_service.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "tests.support.slow_service", str(port), "3"],
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )
    wait_until(lambda: grpc_serving(port), what="slow service", timeout=30, log=log, pid=process.pid)
    yield process, port, log
    if process.poll() is None:
        process.kill()
        process.wait()


def test_sigterm_reports_not_serving_and_lets_the_in_flight_call_finish(slow_service):
    process, port, log = slow_service
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE), timeout=20
        )
        assert next(watch).status == SERVING

        in_flight = rpc.AppointmentsServiceStub(channel).GetAppointment.future(
            pb.GetAppointmentRequest(appointment_id=slow_id(1500)), timeout=20
        )
        wait_until(
            lambda: b"call started" in log.read_bytes(), what="the call to reach the handler", timeout=10
        )
        process.send_signal(signal.SIGTERM)

        assert next(watch).status == NOT_SERVING  # draining is visible before the server stops
        assert in_flight.result().appointment.id == slow_id(1500)  # and the call that was running finished
    assert process.wait(timeout=20) == 0
    lines = log.read_text()
    assert '"message": "draining"' in lines and '"message": "stopped"' in lines


def test_a_call_longer_than_the_grace_period_is_cancelled_and_the_process_still_exits(slow_service):
    process, port, log = slow_service
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        too_long = rpc.AppointmentsServiceStub(channel).GetAppointment.future(
            pb.GetAppointmentRequest(appointment_id=slow_id(60000)), timeout=30
        )
        wait_until(
            lambda: b"call started" in log.read_bytes(), what="the call to reach the handler", timeout=10
        )
        process.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as err:
            too_long.result()
        assert err.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    assert process.wait(timeout=20) == 0
