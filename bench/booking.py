"""Booking throughput and latency through the REST edge, authenticated, on the running local stack.

    ./mesh up && .venv/bin/python -m bench.booking [--concurrency 64 1] [--bookings 6000]

Each run creates fresh doctors with round-the-clock 5-minute slots and one patient per client
(through user_management's gRPC port: the edge allows a client only a few logins a minute). Every
client books distinct free slots for its own patient, so every booking should succeed; the run
counts anything else as an error. Prints one JSON line per concurrency level."""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import aiohttp
import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from google.type import date_pb2, timeofday_pb2

from bench.common import report
from clinic.appointments.v1 import appointments_service_pb2 as ap
from clinic.appointments.v1 import appointments_service_pb2_grpc as ap_rpc
from clinic.appointments.v1 import resources_pb2 as ap_res
from clinic.user_management.v1 import resources_pb2 as um_res
from clinic.user_management.v1 import user_management_service_pb2 as um
from clinic.user_management.v1 import user_management_service_pb2_grpc as um_rpc
from clinic_platform.settings import SERVICE_PORTS
from local_stack.secrets import random_password
from local_stack.stack import ROOT, Ports, Stack

SLOT_MINUTES = 5


async def login(users, email: str, password: str) -> tuple[str, str]:
    reply = await users.Login(um.LoginRequest(email=email, password=password))
    return reply.user.id, reply.access_token


async def setup(doctors: int, patients: int) -> tuple[list[str], list[str]]:
    """Doctors (with schedules) and patients; returns doctor ids and patient access tokens."""
    secrets = Stack(ROOT / "var", Ports()).identity_secrets()
    password = random_password()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{SERVICE_PORTS['user_management']}") as channel:
        users = um_rpc.UserManagementServiceStub(channel)
        _, admin_token = await login(
            users, secrets["bootstrap_admin_email"], secrets["bootstrap_admin_password"]
        )
        admin = [("authorization", f"Bearer {admin_token}")]
        doctor_ids = []
        for n in range(doctors):
            user = um_res.User(
                email=f"bench-doc-{uuid.uuid4().hex[:8]}@example.org",
                given_name="Bench",
                family_name=f"Doctor{n}",
                role=um_res.ROLE_DOCTOR,
                specialty="Bench",
            )
            created = await users.CreateUser(
                um.CreateUserRequest(user=user, password=password), metadata=admin
            )
            doctor_ids.append(created.user.id)

        async def patient() -> str:
            email = f"bench-pat-{uuid.uuid4().hex[:8]}@example.org"
            await users.Register(
                um.RegisterRequest(
                    email=email,
                    password=password,
                    given_name="Bench",
                    family_name="Patient",
                    birth_date=date_pb2.Date(year=1980, month=1, day=1),
                )
            )
            return (await login(users, email, password))[1]

        tokens = list(await asyncio.gather(*(patient() for _ in range(patients))))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{SERVICE_PORTS['appointments']}") as channel:
        calendar = ap_rpc.AppointmentsServiceStub(channel)
        hours = [
            ap_res.WorkingHours(
                day_of_week=day,
                start_time=timeofday_pb2.TimeOfDay(hours=0),
                end_time=timeofday_pb2.TimeOfDay(hours=23, minutes=55),
            )
            for day in range(1, 8)
        ]
        schedule = ap_res.Schedule(
            slot_minutes=SLOT_MINUTES,
            working_hours=hours,
            visit_types=[ap_res.VisitType(code="QUICK", name="Quick", duration_minutes=5)],
        )
        mask = FieldMask(paths=["slot_minutes", "working_hours", "visit_types"])
        for doctor_id in doctor_ids:
            while True:  # the directory is a projection of user events: wait until it has the doctor
                try:
                    await calendar.UpdateSchedule(
                        ap.UpdateScheduleRequest(doctor_id=doctor_id, schedule=schedule, update_mask=mask),
                        metadata=admin,
                    )
                    break
                except grpc.aio.AioRpcError as err:
                    if err.code() != grpc.StatusCode.NOT_FOUND:
                        raise
                    await asyncio.sleep(0.2)
    return doctor_ids, tokens


def slot_times(start_day, zone: ZoneInfo):
    """Every 5-minute slot start from local midnight of start_day on (within working hours)."""
    moment = datetime.combine(start_day, datetime.min.time(), tzinfo=zone)
    while True:
        if moment.time() < datetime.strptime("23:55", "%H:%M").time():
            yield moment.astimezone(UTC)
        moment += timedelta(minutes=SLOT_MINUTES)


async def run(
    edge: str, doctor_ids: list[str], tokens: list[str], *, bookings: int, concurrency: int, start_day
):
    zone = ZoneInfo("Europe/Berlin")
    times = slot_times(start_day, zone)
    per_time = len(doctor_ids)
    stride = max(1, -(-concurrency // per_time))  # clients sharing a doctor take turns in its timeline
    rounds = bookings // concurrency
    timeline = [next(times) for _ in range((concurrency - 1) // per_time + rounds * stride + 1)]
    latencies: list[float] = []
    errors: list[str] = []

    async def client(i: int, http: aiohttp.ClientSession) -> None:
        headers = {"authorization": f"Bearer {tokens[i]}"}
        doctor = doctor_ids[i % per_time]
        k = i // per_time
        for _ in range(rounds):
            body = {
                "doctorId": doctor,
                "startTime": timeline[k].isoformat().replace("+00:00", "Z"),
                "visitType": "QUICK",
            }
            started = time.perf_counter()
            async with http.post("/v1/appointments", json=body, headers=headers) as reply:
                text = await reply.text()
            latencies.append(time.perf_counter() - started)
            if reply.status != 200:
                errors.append(f"{reply.status} {text[:120]}")
            k += stride

    # aiohttp: httpx spends most of a core on its own bookkeeping at this concurrency.
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        edge, connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, elapsed, errors


async def main(args) -> None:
    doctor_ids, tokens = await setup(args.doctors, max(args.concurrency))
    day = datetime.now(ZoneInfo("Europe/Berlin")).date() + timedelta(days=1)
    for concurrency in args.concurrency:
        bookings = args.bookings if concurrency > 1 else args.bookings_single
        latencies, elapsed, errors = await run(
            args.edge, doctor_ids, tokens, bookings=bookings, concurrency=concurrency, start_day=day
        )
        report("booking_edge", latencies, elapsed, concurrency=concurrency, errors=len(errors))
        if errors:
            print("first errors:", errors[:3])
        day += timedelta(days=bookings // (len(doctor_ids) * 280) * 8 + 2)  # fresh days for the next run


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 1])
    parser.add_argument("--bookings", type=int, default=6400)
    parser.add_argument("--bookings-single", type=int, default=500)
    parser.add_argument("--doctors", type=int, default=8)
    parser.add_argument("--edge", default="http://127.0.0.1:8080")
    asyncio.run(main(parser.parse_args()))
