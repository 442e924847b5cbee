"""GET /v1/records/{patient_id} for a chart of 200 entries, through the edge, on a stack of its own
(free ports, a temporary folder: it never touches a running local stack).

    .venv/bin/python -m bench.records [--requests 300] [--seconds 10] [--rounds 3]
                                      [--baseline GIT_REF] [--profile FILE]

Prints JSON lines: latency at concurrency 1 (p50, p99), throughput at concurrency 16, the records
service's CPU per request, and the share of it spent opening ciphertexts (the same number of
AES-256-GCM opens timed in this process, divided by the service's CPU per request).

`--baseline REF` runs the records service as of git REF on a second stack, side by side: rounds
alternate between the two so the machine's other load falls on both alike, and a last line gives
the ratios. `--profile FILE` writes py-spy samples (raw, collapsed stacks) of this code's service.

Last run (2 cores, otherwise quiet; 3 alternating rounds of 400 reads at concurrency 1 and 8 s
at concurrency 16), baseline ee331cf -> this:
  c1 p50 17.2 -> 13.9 ms (1.24x), service CPU 10.0 -> 7.7 ms per chart (1.30x);
  c16 107.5 -> 128.4 charts/s (1.19x), p50 140 -> 121 ms; decryption 7-13 % of the service's CPU.
The p50 <= 15 ms target is met on a quiet machine: see docs/medical_records.md, Figures."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

from bench.common import cpu_seconds, emit, report
from local_stack.stack import ROOT, Ports, Stack
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


class Variant:
    """One stack with a chart of 200 entries; `source` replaces the records service's code."""

    def __init__(self, name: str, folder: Path, source: Path | None) -> None:
        self.name = name
        self.stack = Stack(folder, Ports.free(), env={})
        if source is not None:
            path = os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")]))
            self.stack.service_env_extra = {"PYTHONPATH": path}
        self.url = self.token = ""
        self.c1: list[float] = []
        self.c16: list[float] = []
        self.c16_seconds = 0.0
        self.cpu_c1 = self.cpu_c16 = 0.0

    def start(self) -> None:
        self.stack.start_infrastructure()
        self.stack.start_services(list(self.stack.ports.services))
        self.stack.start_gateway()
        edge = Edge(self.stack)
        pid, self.token = fill_chart(edge, self.stack)
        edge.close()
        self.url = f"{self.stack.edge_url}/v1/records/{pid}"
        asyncio.run(load(self.url, self.token, concurrency=1, requests=30))  # warm up

    @property
    def service(self) -> int | None:
        return self.stack.status()["medical_records"]

    def round(self, requests: int, seconds: float) -> None:
        before = cpu_seconds(self.service)
        latencies, _ = asyncio.run(load(self.url, self.token, concurrency=1, requests=requests))
        self.c1 += latencies
        self.cpu_c1 += cpu_seconds(self.service) - before
        before = cpu_seconds(self.service)
        latencies, elapsed = asyncio.run(load(self.url, self.token, concurrency=16, seconds=seconds))
        self.c16 += latencies
        self.c16_seconds += elapsed
        self.cpu_c16 += cpu_seconds(self.service) - before

    def results(self) -> dict[str, dict]:
        cpu_one = self.cpu_c1 / len(self.c1)
        decrypt = decrypt_seconds_per_chart()
        c1 = report(
            f"records_get_chart_200_c1[{self.name}]",
            self.c1,
            sum(self.c1),
            service_cpu_ms_per_request=round(cpu_one * 1000, 2),
        )
        c16 = report(
            f"records_get_chart_200_c16[{self.name}]",
            self.c16,
            self.c16_seconds,
            service_cpu_ms_per_request=round(self.cpu_c16 / len(self.c16) * 1000, 2),
        )
        share = emit(
            {
                "benchmark": f"records_decrypt_share[{self.name}]",
                "fields_opened_per_chart": FIELDS_PER_CHART,
                "decrypt_ms_per_chart": round(decrypt * 1000, 3),
                "share_of_service_cpu": round(decrypt / cpu_one, 3) if cpu_one else None,
            }
        )
        return {"c1": c1, "c16": c16, "share": share}


def export(ref: str, folder: Path) -> Path:
    """The records service's code at git `ref`, unpacked under `folder` (a PYTHONPATH entry)."""
    git = shutil.which("git") or "git"
    archive = subprocess.run(  # noqa: S603 (our own git, a ref given on our command line)
        [git, "archive", ref, "services/medical_records"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder / "services"


def profile(variant: Variant, output: Path, requests: int) -> None:
    """py-spy samples the records service while it answers `requests` reads at concurrency 1."""
    spy_exe = str(Path(sys.executable).parent / "py-spy")
    spy = subprocess.Popen(  # noqa: S603 (the venv's py-spy on our own child process)
        [spy_exe, "record", "-p", str(variant.service), "-o", str(output), "-f", "raw", "-r", "200"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        asyncio.run(load(variant.url, variant.token, concurrency=1, requests=requests))
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300, help="reads at concurrency 1, per variant")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds at concurrency 16, per variant")
    parser.add_argument("--rounds", type=int, default=3, help="alternations between the variants")
    parser.add_argument("--baseline", metavar="GIT_REF", help="also measure the service as of GIT_REF")
    parser.add_argument("--profile", metavar="FILE", type=Path, help="py-spy samples (raw) of this code")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-records-") as tmp:
        variants = [Variant("this", Path(tmp) / "this", None)]
        if args.baseline:
            source = export(args.baseline, Path(tmp))
            variants.insert(0, Variant(f"baseline {args.baseline}", Path(tmp) / "baseline", source))
        try:
            for variant in variants:
                variant.start()
            # Alternating rounds: the machine's other load falls on every variant alike.
            for _ in range(args.rounds):
                for variant in variants:
                    variant.round(args.requests // args.rounds, args.seconds / args.rounds)
            results = [variant.results() for variant in variants]
            if len(results) == 2:
                (old, new), cpu = results, "service_cpu_ms_per_request"
                emit(
                    {
                        "benchmark": "records_get_chart_200_ratio_baseline_to_this",
                        "c1_p50": round(old["c1"]["p50_ms"] / new["c1"]["p50_ms"], 2),
                        "c1_service_cpu": round(old["c1"][cpu] / new["c1"][cpu], 2),
                        "c16_throughput": round(new["c16"]["per_second"] / old["c16"]["per_second"], 2),
                        "c16_p50": round(old["c16"]["p50_ms"] / new["c16"]["p50_ms"], 2),
                    }
                )
            if args.profile:
                profile(variants[-1], args.profile, args.requests)
        finally:
            for variant in variants:
                variant.stack.down()


if __name__ == "__main__":
    main()
