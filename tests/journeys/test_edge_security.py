"""The edge's own defences: a per-client login limit (429), signing-key rotation with no refused
token while requests flow, and the TLS listener."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time

import httpx
import pytest

from local_stack.components import Envoy
from local_stack.stack import free_port
from tests.support.identity import PASSWORD, Edge, registration, unique_email
from tests.support.polling import until


@pytest.fixture
def strict_edge(mesh, tmp_path):
    """A second Envoy in front of the same services with the production login limit, so exhausting
    it does not throttle the other tests (they all come from 127.0.0.1)."""
    port, admin = free_port(), free_port()
    envoy = Envoy(tmp_path, tmp_path / "gateway" / "envoy.json", port, admin)
    mesh.write_edge_config(envoy.config, port, admin, login_burst=3, login_per_minute=10)
    envoy.start()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        yield client
    envoy.stop()


def test_repeated_logins_from_one_client_get_429_at_the_edge_and_unknown_emails_look_the_same(
    strict_edge, mesh
):
    people = Edge(mesh)
    person = people.register_patient()
    people.close()
    wrong = strict_edge.post(
        "/v1/auth/login", json={"email": person.email, "password": "not the password at all"}
    )
    unknown = strict_edge.post(
        "/v1/auth/login", json={"email": unique_email("nobody"), "password": "not it at all"}
    )
    assert (wrong.status_code, wrong.json()) == (unknown.status_code, unknown.json())
    assert wrong.json() == {"code": 16, "message": "invalid email or password"}

    replies = [
        strict_edge.post("/v1/auth/login", json={"email": person.email, "password": PASSWORD})
        for _ in range(3)
    ]
    limited = replies[-1]
    assert limited.status_code == 429
    assert limited.json()["code"] == 8  # RESOURCE_EXHAUSTED
    assert int(limited.headers["retry-after"]) > 0
    # The limit is on logins only: the same client still reaches everything else.
    assert strict_edge.get("/.well-known/jwks.json").status_code == 200


def _kid(token: str) -> str:
    header = token.split(".", maxsplit=1)[0]
    return json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]


def test_rotating_the_signing_key_while_requests_flow_refuses_no_token(mesh):
    edge = Edge(mesh)
    admin = edge.admin()
    person = edge.register_patient()
    old_kid = _kid(person.access_token)
    statuses: list[int] = []
    new_kid_accepted = 0
    stop = threading.Event()

    def traffic() -> None:
        nonlocal new_kid_accepted
        with httpx.Client(base_url=mesh.edge_url, timeout=10) as http:
            while not stop.is_set():
                old = http.get("/v1/users/me", headers=person.auth)  # a token of the old key
                login = http.post("/v1/auth/login", json={"email": person.email, "password": PASSWORD})
                fresh = login.json().get("accessToken", "")
                new = http.get("/v1/users/me", headers={"authorization": f"Bearer {fresh}"})
                statuses.extend([old.status_code, login.status_code, new.status_code])
                if new.status_code == 200 and _kid(fresh) != old_kid:
                    new_kid_accepted += 1

    flowing = threading.Thread(target=traffic)
    flowing.start()
    try:
        until(lambda: len(statuses) >= 30, within=20, what="traffic to flow")
        rotated = edge.http.post("/v1/auth/keys:rotate", json={}, headers=admin.auth)
        assert rotated.status_code == 200, rotated.text
        again = edge.http.post("/v1/auth/keys:rotate", json={}, headers=admin.auth)
        assert again.status_code == 400 and "already pending" in again.json()["message"]
        until(lambda: new_kid_accepted >= 20, within=30, what="tokens signed with the new key to be accepted")
        assert rotated.json()["key"]["kid"] != old_kid
    finally:
        stop.set()
        flowing.join()
        edge.close()
    refused = [s for s in statuses if s != 200]
    assert refused == [], f"{len(refused)} of {len(statuses)} requests refused during rotation"
    jwks = httpx.get(f"{mesh.edge_url}/.well-known/jwks.json").json()["keys"]
    assert {old_kid, rotated.json()["key"]["kid"]} <= {k["kid"] for k in jwks}  # the old key stays published


def test_the_edge_serves_https_with_the_stack_certificate(mesh):
    certificate = mesh.gateway_dir / "tls" / "edge.crt"
    trust = ssl.create_default_context(cafile=str(certificate))
    with httpx.Client(base_url=f"https://localhost:{mesh.ports.tls}", verify=trust, timeout=10) as https:
        assert https.get("/healthz").status_code == 200
        email = unique_email()
        registered = https.post("/v1/auth/register", json=registration(email, givenName="Tess"))
        assert registered.status_code == 200
        login = https.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        token = login.json()["accessToken"]
        assert https.get("/v1/users/me", headers={"authorization": f"Bearer {token}"}).status_code == 200
    with pytest.raises(httpx.HTTPError):
        httpx.get(
            f"https://localhost:{mesh.ports.tls}/healthz", timeout=5
        )  # untrusted without the certificate


def test_a_revoked_session_is_refused_by_the_edge_within_a_second(mesh):
    edge = Edge(mesh)
    person = edge.register_patient()
    edge.http.post("/v1/auth/logout", json={}, headers=person.auth)
    started = time.monotonic()
    until(
        lambda: edge.http.get("/v1/users/me", headers=person.auth).status_code == 401,
        within=1.0,
        what="the logged-out token to be refused",
    )
    assert time.monotonic() - started < 1.0
    edge.close()
