"""A booking storm through the Envoy edge: many clients racing for few slots."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass

import httpx

from tests.support.clinic import at, doctor_with_schedule, future_day
from tests.support.db import fetch
from tests.support.identity import PASSWORD, Edge, registration, unique_email

CLIENTS = 100
ATTEMPTS_PER_CLIENT = 21  # 2,100 attempts in all
RETRY_SHARE = 0.2


@dataclass
class Attempt:
    patient: str
    doctor_id: str
    start: str
    request_id: str
    retry_of: Attempt | None = None
    status: int = 0
    appointment_id: str = ""


async def _patient(http: httpx.AsyncClient) -> tuple[str, str]:
    email = unique_email("storm")
    (await http.post("/v1/auth/register", json=registration(email))).raise_for_status()
    login = await http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    login.raise_for_status()
    return login.json()["user"]["id"], login.json()["accessToken"]


async def _client(
    http: httpx.AsyncClient, token: str, patient: str, targets: list, rng: random.Random
) -> list[Attempt]:
    headers = {"authorization": f"Bearer {token}"}
    done: list[Attempt] = []
    for _ in range(ATTEMPTS_PER_CLIENT):
        if done and rng.random() < RETRY_SHARE:
            original = rng.choice([a for a in done if a.retry_of is None])
            attempt = Attempt(
                patient, original.doctor_id, original.start, original.request_id, retry_of=original
            )
        else:
            doctor_id, start = rng.choice(targets)
            attempt = Attempt(patient, doctor_id, start, str(uuid.uuid4()))
        reply = await http.post(
            "/v1/appointments",
            params={"request_id": attempt.request_id},
            json={"doctorId": attempt.doctor_id, "startTime": attempt.start, "visitType": "CONSULT"},
            headers=headers,
        )
        attempt.status = reply.status_code
        if reply.status_code == 200:
            attempt.appointment_id = reply.json()["appointment"]["id"]
        else:
            assert reply.json()["code"] == 6, reply.text  # ALREADY_EXISTS, as JSON
            assert "time slot already booked" in reply.json()["message"], reply.text
        done.append(attempt)
    return done


async def _storm(mesh, targets: list) -> tuple[list[Attempt], dict[str, str]]:
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=mesh.edge_url, timeout=60, limits=limits) as http:
        people = await asyncio.gather(*(_patient(http) for _ in range(CLIENTS)))
        tokens = dict(people)
        results = await asyncio.gather(
            *(
                _client(http, token, patient, targets, random.Random(n))
                for n, (patient, token) in enumerate(people)
            )
        )
    return [a for attempts in results for a in attempts], tokens


def test_a_booking_storm_confirms_each_slot_exactly_once(mesh):
    edge = Edge(mesh)
    admin = edge.admin()
    doctors = [doctor_with_schedule(edge, admin).user_id for _ in range(2)]
    day = future_day(12)
    times = [at(day, f"{10 + i // 2:02}:{30 * (i % 2):02}") for i in range(10)]  # 10:00 ... 14:30, adjacent
    targets = [(d, t) for d in doctors for t in times]  # 20 slots; the doctors' slots overlap in time

    attempts, tokens = asyncio.run(_storm(mesh, targets))

    assert len(attempts) >= 2000
    statuses = Counter(a.status for a in attempts)
    assert set(statuses) <= {200, 409}, statuses  # every loser a 409; no 5xx, nothing else
    retries = [a for a in attempts if a.retry_of is not None]
    assert len(retries) >= 0.15 * len(attempts)
    for retry in retries:
        assert (retry.status, retry.appointment_id) == (retry.retry_of.status, retry.retry_of.appointment_id)
    winners = defaultdict(set)
    for attempt in attempts:
        if attempt.status == 200:
            winners[(attempt.doctor_id, attempt.start)].add(attempt.appointment_id)
    assert sorted(winners) == sorted(targets)  # every slot, the adjacent ones too, was booked...
    assert all(len(ids) == 1 for ids in winners.values())  # ...exactly once

    # Ranges that overlap the booked ones: a longer visit, the same patient with the other doctor.
    async def probes() -> list[int]:
        async with httpx.AsyncClient(base_url=mesh.edge_url, timeout=60) as http:
            winner = next(a for a in attempts if a.status == 200 and a.retry_of is None)
            other_doctor = next(d for d in doctors if d != winner.doctor_id)
            requests = [
                ({"doctorId": d, "startTime": t, "visitType": "LONG"}, tokens[winner.patient])
                for d, t in targets[:-1]
            ] + [
                (
                    {"doctorId": other_doctor, "startTime": winner.start, "visitType": "CONSULT"},
                    tokens[winner.patient],
                )
            ]
            replies = await asyncio.gather(
                *(
                    http.post("/v1/appointments", json=b, headers={"authorization": f"Bearer {t}"})
                    for b, t in requests
                )
            )
            return [r.status_code for r in replies]

    assert set(asyncio.run(probes())) == {409}

    url = mesh.database_urls["appointments"]
    confirmed = fetch(
        url,
        "SELECT count(*) FROM calendar_entries WHERE doctor_id = ANY($1::uuid[]) AND status = 'CONFIRMED'",
        doctors,
    )[0][0]
    assert confirmed == 20
    overlapping = fetch(
        url,
        """
        SELECT count(*) FROM calendar_entries a JOIN calendar_entries b ON a.id < b.id
         AND (a.doctor_id = b.doctor_id OR a.patient_id = b.patient_id)
         AND tstzrange(a.start_time, a.end_time) && tstzrange(b.start_time, b.end_time)
        WHERE a.status IN ('CONFIRMED', 'COMPLETED') AND b.status IN ('CONFIRMED', 'COMPLETED')
          AND (a.doctor_id = ANY($1::uuid[]) OR b.doctor_id = ANY($1::uuid[]))
        """,
        doctors,
    )[0][0]
    assert overlapping == 0
    edge.close()
