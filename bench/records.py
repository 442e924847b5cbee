"""GET /v1/records/{patient_id} for a chart of 200 entries, through the edge, on a stack of its own
(free ports, a temporary folder: it never touches a running local stack).

    .venv/bin/python -m bench.records [--requests 300] [--seconds 10]

Prints JSON lines: latency at concurrency 1 (p50, p99), throughput at concurrency 16, the records
service's CPU per request, and the share of it spent opening ciphertexts (the same number of
AES-256-GCM opens timed in this process, divided by the service's CPU per request)."""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

from bench.common import cpu_seconds, emit, report
from local_stack.stack import Ports, Stack
from medical_records.crypto import FieldCipher
from tests.support.identity import Edge
from tests.support.records import book, new_doctor, new_patient

# Sealed fields: 40 encounters x 1, notes x 4, diagnoses x 2, prescriptions x 5, vital signs x 1.
FIELDS_PER_CHART = 40 * 1 + 40 * 4 + 40 * 2 + 40 * 5 + 40 * 1


def fill_chart(edge: Edge, stack: Stack) -> tuple[str, str]:
    admin = edge.admin()
    doctor = new_doctor(edge, admin, stack)
    patient = new_patient(edge, stack)
    book(edge, stack, patient, doctor)
    pid, auth = patient.user_id, doctor.auth
    for i in range(40):
        for path, body in [
            ("encounters", {"chiefComplaint": f"complaint {i}"}),
            (
                "notes",
                {
                    "subjective": f"s {i}" * 20,
                    "objective": "o" * 80,
                    "assessment": "a" * 60,
                    "plan": "p" * 60,
                },
            ),
            ("diagnoses", {"code": "I10"}),
            ("prescriptions", {"drug": f"drug {i}", "dose": "5 mg", "frequency": "daily", "route": "oral"}),
            ("vitals", {"systolicMmhg": 120, "diastolicMmhg": 80, "heartRateBpm": 70}),
        ]:
            edge.http.post(f"/v1/records/{pid}/{path}", json=body, headers=auth).raise_for_status()
    return pid, doctor.access_token


async def load(url: str, token: str, *, concurrency: int, requests: int = 0, seconds: float = 0.0):
    latencies: list[float] = []
    deadline = time.monotonic() + seconds if seconds else None
    headers = {"authorization": f"Bearer {token}"}

    async def worker(session: aiohttp.ClientSession) -> None:
        while (deadline and time.monotonic() < deadline) or (not deadline and len(latencies) < requests):
            started = time.perf_counter()
            async with session.get(url, headers=headers) as reply:
                body = await reply.read()
                assert reply.status == 200, body[:200]
            latencies.append(time.perf_counter() - started)

    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


def decrypt_seconds_per_chart(rounds: int = 200) -> float:
    cipher = FieldCipher(str(uuid.uuid4()), os.urandom(32))
    sealed = [cipher.seal("notes", str(i), "subjective", "x" * 60) for i in range(FIELDS_PER_CHART)]
    started = time.process_time()
    for _ in range(rounds):
        for i, blob in enumerate(sealed):
            cipher.open("notes", str(i), "subjective", blob)
    return (time.process_time() - started) / rounds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-records-") as tmp:
        stack = Stack(Path(tmp), Ports.free(), env={})
        try:
            stack.start_infrastructure()
            stack.start_services(list(stack.ports.services))
            stack.start_gateway()
            edge = Edge(stack)
            pid, token = fill_chart(edge, stack)
            edge.close()
            url = f"{stack.edge_url}/v1/records/{pid}"
            service = stack.status()["medical_records"]
            asyncio.run(load(url, token, concurrency=1, requests=30))  # warm up
            before = cpu_seconds(service)
            latencies, elapsed = asyncio.run(load(url, token, concurrency=1, requests=args.requests))
            cpu_one = (cpu_seconds(service) - before) / len(latencies)
            report(
                "records_get_chart_200_c1",
                latencies,
                elapsed,
                service_cpu_ms_per_request=round(cpu_one * 1000, 2),
            )
            before = cpu_seconds(service)
            latencies, elapsed = asyncio.run(load(url, token, concurrency=16, seconds=args.seconds))
            cpu_many = (cpu_seconds(service) - before) / len(latencies)
            report(
                "records_get_chart_200_c16",
                latencies,
                elapsed,
                service_cpu_ms_per_request=round(cpu_many * 1000, 2),
            )
            decrypt = decrypt_seconds_per_chart()
            emit(
                {
                    "benchmark": "records_decrypt_share",
                    "fields_opened_per_chart": FIELDS_PER_CHART,
                    "decrypt_ms_per_chart": round(decrypt * 1000, 3),
                    "share_of_service_cpu": round(decrypt / cpu_one, 3) if cpu_one else None,
                }
            )
        finally:
            stack.down()


if __name__ == "__main__":
    main()
