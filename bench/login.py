"""Login latency on the running local stack (./mesh up): argon2id at OWASP's floor dominates.

    .venv/bin/python -m bench.login [--requests 200] [--concurrency 1 4]

Logins go straight to user_management's gRPC port (the edge allows a client only a few logins a
minute), plus a few through the REST edge to show what the edge adds. Prints one JSON line per
measurement."""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import grpc
import httpx

from bench.common import report
from clinic.user_management.v1 import user_management_service_pb2 as pb
from clinic.user_management.v1 import user_management_service_pb2_grpc as rpc
from clinic_platform.settings import SERVICE_PORTS

PASSWORD = "a benchmark passphrase 42"  # noqa: S105 - a throwaway account the benchmark makes


async def logins(stub, email: str, count: int, concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    queue = asyncio.Queue()
    for _ in range(count):
        queue.put_nowait(None)

    async def worker() -> None:
        while not queue.empty():
            queue.get_nowait()
            started = time.perf_counter()
            await stub.Login(pb.LoginRequest(email=email, password=PASSWORD), timeout=30)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


async def main(args) -> None:
    email = f"bench-{uuid.uuid4().hex[:8]}@example.org"
    async with httpx.AsyncClient(base_url=args.edge, timeout=30) as http:
        registered = await http.post(
            "/v1/auth/register",
            json={
                "email": email,
                "password": PASSWORD,
                "givenName": "Bench",
                "familyName": "Mark",
                "birthDate": {"year": 1980, "month": 1, "day": 1},
            },
        )
        registered.raise_for_status()
        edge_latencies = []
        for _ in range(args.edge_requests):
            started = time.perf_counter()
            (
                await http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
            ).raise_for_status()
            edge_latencies.append(time.perf_counter() - started)
    async with grpc.aio.insecure_channel(args.grpc) as channel:
        stub = rpc.UserManagementServiceStub(channel)
        await logins(stub, email, 5, 1)  # warm up
        for concurrency in args.concurrency:
            latencies, elapsed = await logins(stub, email, args.requests, concurrency)
            report("login_grpc", latencies, elapsed, concurrency=concurrency)
    report("login_edge", edge_latencies, sum(edge_latencies), concurrency=1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--edge-requests", type=int, default=3)
    parser.add_argument("--edge", default="http://127.0.0.1:8080")
    parser.add_argument("--grpc", default=f"127.0.0.1:{SERVICE_PORTS['user_management']}")
    asyncio.run(main(parser.parse_args()))
