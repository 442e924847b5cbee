"""Acting as people against the running mesh: register, log in, call the edge or a service."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import grpc
import httpx

from clinic.user_management.v1 import user_management_service_pb2 as um_pb
from clinic.user_management.v1 import user_management_service_pb2_grpc as um_rpc
from local_stack.stack import Stack

PASSWORD = "a long passphrase 4 tests"


def unique_email(who: str = "patient") -> str:
    return f"{who}-{uuid.uuid4().hex[:10]}@example.org"


def registration(email: str, **fields) -> dict:
    """A valid POST /v1/auth/register body; `fields` override or add (camelCase)."""
    body = {
        "email": email,
        "password": PASSWORD,
        "givenName": "Pat",
        "familyName": "Tester",
        "birthDate": {"year": 1990, "month": 5, "day": 17},
    }
    return body | fields


@dataclass
class Person:
    user_id: str
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.access_token}"}


class Edge:
    """The REST edge as a client sees it."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.http = httpx.Client(base_url=stack.edge_url, timeout=15)

    def close(self) -> None:
        self.http.close()

    def login(self, email: str, password: str) -> Person:
        reply = self.http.post("/v1/auth/login", json={"email": email, "password": password})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        return Person(body["user"]["id"], email, password, body["accessToken"], body["refreshToken"])

    def register_patient(self, email: str | None = None, **extra) -> Person:
        email = email or unique_email()
        reply = self.http.post("/v1/auth/register", json=registration(email, **extra))
        assert reply.status_code == 200, reply.text
        return self.login(email, PASSWORD)

    def admin(self) -> Person:
        secrets = self.stack.identity_secrets()
        return self.login(secrets["bootstrap_admin_email"], secrets["bootstrap_admin_password"])

    def create_staff(self, admin: Person, role: str, **extra) -> Person:
        email = unique_email(role.lower())
        user = {
            "email": email,
            "givenName": "Sam",
            "familyName": role.title(),
            "role": f"ROLE_{role}",
            **extra,
        }
        reply = self.http.post("/v1/users", json={"user": user, "password": PASSWORD}, headers=admin.auth)
        assert reply.status_code == 200, reply.text
        return self.login(email, PASSWORD)


def grpc_stub(stack: Stack, service: str = "user_management"):
    """A stub straight to a service's gRPC port (bypassing Envoy)."""
    channel = grpc.insecure_channel(f"127.0.0.1:{stack.ports.services[service]}")
    return channel, um_rpc.UserManagementServiceStub(channel)


def grpc_me(stack: Stack, token: str) -> tuple[grpc.StatusCode, str]:
    channel, stub = grpc_stub(stack)
    with channel:
        try:
            stub.GetCurrentUser(
                um_pb.GetCurrentUserRequest(), metadata=[("authorization", f"Bearer {token}")]
            )
        except grpc.RpcError as err:
            return err.code(), err.details()
    return grpc.StatusCode.OK, ""
