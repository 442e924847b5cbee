"""Demo data for the local stack, created through the public API as a clinic would: a user for
every role (passwords generated once and kept in var/secrets/demo-users.json, never committed).
Running it again changes nothing that exists already."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from local_stack.secrets import SecretFile, random_password
from local_stack.stack import Stack


@dataclass(frozen=True)
class DemoUser:
    email: str
    role: str
    given_name: str
    family_name: str
    specialty: str = ""
    display_name: str = ""


DEMO_USERS = [
    DemoUser("ana.silva@clinic.example", "DOCTOR", "Ana", "Silva", "Cardiology", "Dr. Ana Silva"),
    DemoUser("ben.okafor@clinic.example", "DOCTOR", "Ben", "Okafor", "General Practice", "Dr. Ben Okafor"),
    DemoUser("nora.nurse@clinic.example", "NURSE", "Nora", "Lind"),
    DemoUser("rita.desk@clinic.example", "RECEPTIONIST", "Rita", "Moreau"),
    DemoUser("ada.admin@clinic.example", "ADMIN", "Ada", "Keller"),
    DemoUser("alan.analyst@clinic.example", "ANALYST", "Alan", "Weber"),
    DemoUser("paula.patient@example.org", "PATIENT", "Paula", "Novak"),
    DemoUser("peter.patient@example.org", "PATIENT", "Peter", "Haas"),
]


def create_demo_data(stack: Stack, report) -> list[tuple[DemoUser, str]]:
    passwords = SecretFile(stack.state_dir / "secrets" / "demo-users.json").values(
        {u.email: random_password for u in DEMO_USERS}
    )
    admin = stack.identity_secrets()
    with httpx.Client(base_url=stack.edge_url, timeout=15) as http:
        login = http.post(
            "/v1/auth/login",
            json={"email": admin["bootstrap_admin_email"], "password": admin["bootstrap_admin_password"]},
        )
        login.raise_for_status()
        headers = {"authorization": f"Bearer {login.json()['accessToken']}"}
        for user in DEMO_USERS:
            body = {
                "email": user.email,
                "givenName": user.given_name,
                "familyName": user.family_name,
                "role": f"ROLE_{user.role}",
            }
            if user.specialty:
                body |= {"specialty": user.specialty, "displayName": user.display_name}
            if user.role == "PATIENT":
                body["birthDate"] = {"year": 1985, "month": 3, "day": 14}
            reply = http.post(
                "/v1/users", json={"user": body, "password": passwords[user.email]}, headers=headers
            )
            if reply.status_code not in (200, 409):
                raise RuntimeError(f"could not create {user.email}: {reply.status_code} {reply.text}")
            report(user.role.lower(), f"{user.email}{'' if reply.status_code == 200 else ' (already there)'}")
        _demo_schedules(http, headers, report)
        for visit_type, euros in DEMO_FEES.items():
            http.patch(
                f"/v1/billing/fees/{visit_type}",
                params={"update_mask": "price", "allow_missing": "true"},
                json={"price": {"currencyCode": "EUR", "units": euros}},
                headers=headers,
            ).raise_for_status()
            report("fee", f"{visit_type}: {euros}.00 EUR")
    return [(u, passwords[u.email]) for u in DEMO_USERS]


WEEKDAY_HOURS = [
    {"dayOfWeek": day, "startTime": {"hours": start}, "endTime": {"hours": end}}
    for day in ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY")
    for start, end in ((9, 12), (13, 17))
]
DEMO_FEES = {"CONSULT": 60, "CHECKUP": 90}
VISIT_TYPES = [
    {"code": "CONSULT", "name": "Consultation", "durationMinutes": 30},
    {"code": "CHECKUP", "name": "Check-up", "durationMinutes": 60},
]


def _demo_schedules(http: httpx.Client, headers: dict[str, str], report) -> None:
    """Weekday hours for the demo doctors, once the doctor directory (fed by user events) has them."""
    wanted = {u.display_name for u in DEMO_USERS if u.role == "DOCTOR"}
    deadline = time.monotonic() + 30
    while True:
        doctors = http.get("/v1/doctors", headers=headers).json().get("doctors", [])
        found = {d["displayName"]: d["id"] for d in doctors if d["displayName"] in wanted}
        if len(found) == len(wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.5)  # the directory is a projection of user events: poll until it has them
    for name, doctor_id in sorted(found.items()):
        reply = http.patch(
            f"/v1/doctors/{doctor_id}/schedule",
            params={"update_mask": "slot_minutes,working_hours,visit_types"},
            json={"slotMinutes": 30, "workingHours": WEEKDAY_HOURS, "visitTypes": VISIT_TYPES},
            headers=headers,
        )
        reply.raise_for_status()
        report("schedule", f"{name}: Mon-Fri 09-12 and 13-17, 30-minute slots")
