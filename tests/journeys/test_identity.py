"""Identity through the Envoy edge and against the services directly: accounts, sessions,
forged and stale tokens, who may see and change what."""

from __future__ import annotations

import uuid

import grpc
import pytest

from clinic.appointments.v1 import appointments_service_pb2 as ap_pb
from clinic.appointments.v1 import appointments_service_pb2_grpc as ap_rpc
from clinic.user_management.v1 import user_management_service_pb2 as um_pb
from tests.support.identity import PASSWORD, Edge, grpc_me, grpc_stub, registration, unique_email
from tests.support.polling import until
from tests.support.tokens import Forger


@pytest.fixture(scope="module")
def edge(mesh):
    client = Edge(mesh)
    yield client
    client.close()


def appointments_direct(stack, token: str) -> grpc.StatusCode:
    """Another service, called straight on its gRPC port: it checks the token too."""
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.services['appointments']}") as channel:
        try:
            ap_rpc.AppointmentsServiceStub(channel).ListDoctors(
                ap_pb.ListDoctorsRequest(), metadata=[("authorization", f"Bearer {token}")], timeout=5
            )
        except grpc.RpcError as err:
            print("appointments said:", err.code(), err.details())
            return err.code()
    return grpc.StatusCode.OK


# -- the journey ----------------------------------------------------------------------------------
def test_register_login_read_me_logout_and_the_token_stops_working_everywhere(edge, mesh):
    person = edge.register_patient(phoneNumber="+4915112345678")
    me = edge.http.get("/v1/users/me", headers=person.auth)
    assert me.status_code == 200
    assert me.json()["user"]["email"] == person.email
    assert me.json()["user"]["role"] == "ROLE_PATIENT"
    assert appointments_direct(mesh, person.access_token) != grpc.StatusCode.UNAUTHENTICATED

    assert edge.http.post("/v1/auth/logout", json={}, headers=person.auth).status_code == 200

    assert edge.http.get("/v1/users/me", headers=person.auth).status_code == 401
    assert grpc_me(mesh, person.access_token)[0] is grpc.StatusCode.UNAUTHENTICATED
    until(
        lambda: appointments_direct(mesh, person.access_token) is grpc.StatusCode.UNAUTHENTICATED,
        within=1.5,
        what="every service to refuse the logged-out token within a second",
    )


def test_refresh_rotates_and_a_reused_refresh_token_ends_the_session(edge, mesh):
    person = edge.register_patient()
    first = edge.http.post("/v1/auth/refresh", json={"refreshToken": person.refresh_token})
    assert first.status_code == 200
    rotated = first.json()
    assert rotated["refreshToken"] != person.refresh_token
    assert (
        edge.http.get(
            "/v1/users/me", headers={"authorization": f"Bearer {rotated['accessToken']}"}
        ).status_code
        == 200
    )

    reused = edge.http.post("/v1/auth/refresh", json={"refreshToken": person.refresh_token})
    assert reused.status_code == 401
    assert "already used" in reused.json()["message"]
    # The whole session is dead: the newest tokens stop working too.
    assert (
        edge.http.post("/v1/auth/refresh", json={"refreshToken": rotated["refreshToken"]}).status_code == 401
    )
    until(
        lambda: grpc_me(mesh, rotated["accessToken"])[0] is grpc.StatusCode.UNAUTHENTICATED,
        within=1.5,
        what="the access token of the ended session to be refused",
    )


# -- forged and stale tokens ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def forged(edge, mesh) -> dict[str, str]:
    person = edge.register_patient()
    forger = Forger(mesh, person.access_token)
    logged_out = edge.register_patient()
    edge.http.post("/v1/auth/logout", json={}, headers=logged_out.auth)
    return {
        "alg none": forger.alg_none(),
        "HS256 signed with the public key": forger.hs256_with_public_key(),
        "expired": forger.expired(),
        "wrong iss": forger.signed(iss="someone-else"),
        "wrong aud": forger.signed(aud="another-api"),
        "unknown kid": forger.unknown_kid(),
        "payload edited after signing": Forger.payload_edited(person.access_token, role="ADMIN"),
        "session logged out": logged_out.access_token,
        "refresh token as access token": person.refresh_token,
        "not a JWT": "hello",
    }


FORGERIES = [
    "alg none",
    "HS256 signed with the public key",
    "expired",
    "wrong iss",
    "wrong aud",
    "unknown kid",
    "payload edited after signing",
    "session logged out",
    "refresh token as access token",
    "not a JWT",
]


# Envoy answers a token for another audience with 403 (its choice; still a refusal). Only a
# logged-out session is invisible to Envoy: the service refuses it.
EDGE_STATUS = {"wrong aud": (403, 7), "refresh token as access token": (403, 7)}


@pytest.mark.parametrize("kind", FORGERIES)
def test_a_forged_or_stale_token_is_refused_at_the_edge_and_by_every_service(kind, forged, edge, mesh):
    token = forged[kind]
    request_id = f"forged-{uuid.uuid4()}"
    reply = edge.http.get(
        "/v1/users/me", headers={"authorization": f"Bearer {token}", "x-request-id": request_id}
    )
    status, code = EDGE_STATUS.get(kind, (401, 16))
    assert (reply.status_code, reply.json()["code"]) == (status, code), reply.text
    service_log = mesh.state_dir / "log" / "user_management.log"
    if kind == "session logged out":  # the service writes its log line after it has answered
        until(lambda: request_id in service_log.read_text(), within=5, what="the service to log the call")
    else:
        assert request_id not in service_log.read_text()
    assert grpc_me(mesh, token)[0] is grpc.StatusCode.UNAUTHENTICATED
    assert appointments_direct(mesh, token) is grpc.StatusCode.UNAUTHENTICATED


def test_a_call_without_a_token_is_refused_except_on_open_routes(edge, mesh):
    assert edge.http.get("/v1/users/me").status_code == 401
    assert edge.http.get("/.well-known/jwks.json").status_code == 200
    assert appointments_direct(mesh, "") is grpc.StatusCode.UNAUTHENTICATED


# -- who may see and change what ------------------------------------------------------------------
def test_a_patient_cannot_read_update_or_deactivate_another_user(edge):
    alice, bob = edge.register_patient(), edge.register_patient()
    assert edge.http.get(f"/v1/users/{bob.user_id}", headers=alice.auth).status_code == 404
    patch = edge.http.patch(
        f"/v1/users/{bob.user_id}",
        params={"update_mask": "phone_number"},
        json={"phoneNumber": "+4915100000000"},
        headers=alice.auth,
    )
    assert patch.status_code == 404
    assert (
        edge.http.post(f"/v1/users/{bob.user_id}:deactivate", json={}, headers=alice.auth).status_code == 404
    )
    assert edge.http.get("/v1/users", headers=alice.auth).status_code == 403
    assert edge.http.get("/v1/users/me", headers=bob.auth).json()["user"]["status"] == "USER_STATUS_ACTIVE"


def test_a_patient_cannot_raise_their_own_role_or_status_but_may_edit_their_profile(edge):
    person = edge.register_patient()
    for field, value in (("role", "ROLE_ADMIN"), ("status", "USER_STATUS_DEACTIVATED")):
        reply = edge.http.patch(
            f"/v1/users/{person.user_id}",
            params={"update_mask": field},
            json={field: value},
            headers=person.auth,
        )
        assert reply.status_code == 403, reply.text
        assert field in reply.json()["message"]
    edited = edge.http.patch(
        f"/v1/users/{person.user_id}",
        params={"update_mask": "display_name,phone_number"},
        json={"displayName": "P. Tester", "phoneNumber": "+4915199999999"},
        headers=person.auth,
    )
    assert edited.status_code == 200, edited.text
    me = edge.http.get("/v1/users/me", headers=person.auth).json()["user"]
    assert me["role"] == "ROLE_PATIENT"
    assert (me["displayName"], me["phoneNumber"]) == ("P. Tester", "+4915199999999")


def test_a_receptionist_registers_patients_but_cannot_create_an_admin(edge):
    admin = edge.admin()
    receptionist = edge.create_staff(admin, "RECEPTIONIST")
    as_admin = {"email": unique_email("sneaky"), "givenName": "No", "familyName": "Way", "role": "ROLE_ADMIN"}
    refused = edge.http.post(
        "/v1/users", json={"user": as_admin, "password": PASSWORD}, headers=receptionist.auth
    )
    assert refused.status_code == 403
    patient = {
        "email": unique_email("walkin"),
        "givenName": "Walk",
        "familyName": "In",
        "role": "ROLE_PATIENT",
        "birthDate": {"year": 1970, "month": 1, "day": 2},
    }
    created = edge.http.post(
        "/v1/users", json={"user": patient, "password": PASSWORD}, headers=receptionist.auth
    )
    assert created.status_code == 200, created.text


def test_an_admin_creates_a_doctor_and_deactivating_a_user_ends_their_sessions(edge, mesh):
    admin = edge.admin()
    doctor = edge.create_staff(admin, "DOCTOR", specialty="Cardiology", displayName="Dr. Sam Doctor")
    assert edge.http.get("/v1/users/me", headers=doctor.auth).json()["user"]["specialty"] == "Cardiology"
    reply = edge.http.post(f"/v1/users/{doctor.user_id}:deactivate", json={}, headers=admin.auth)
    assert reply.status_code == 200
    assert reply.json()["user"]["status"] == "USER_STATUS_DEACTIVATED"
    until(
        lambda: grpc_me(mesh, doctor.access_token)[0] is grpc.StatusCode.UNAUTHENTICATED,
        within=1.5,
        what="the deactivated doctor's token to be refused",
    )
    login = edge.http.post("/v1/auth/login", json={"email": doctor.email, "password": PASSWORD})
    assert login.status_code == 401


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"password": "short"}, "password", "at least 12 characters"),
        ({"password": "password1234"}, "password", "too common"),
        ({"email": "not-an-email"}, "email", "not an email address"),
        ({"birthDate": None}, "birth_date", "is required"),
        ({"phoneNumber": "0151 123"}, "phone_number", "E.164"),
        ({"givenName": ""}, "given_name", "is required"),
    ],
)
def test_registration_with_bad_input_is_a_400_naming_the_field(edge, change, field, words):
    body = {k: v for k, v in (registration(unique_email()) | change).items() if v is not None}
    reply = edge.http.post("/v1/auth/register", json=body)
    assert reply.status_code == 400
    message = reply.json()["message"]
    assert message.startswith(f"{field}:") and words in message
    violations = reply.json()["details"][0]["fieldViolations"]
    assert violations[0]["field"] == field
    if "email" in body and "@" in body["email"]:
        assert (
            edge.http.post("/v1/auth/login", json={"email": body["email"], "password": PASSWORD}).status_code
            == 401
        )


def test_an_email_is_taken_case_insensitively_and_a_retried_registration_returns_the_first_answer(edge):
    email = unique_email()
    body = registration(email, requestId="8f14e45f-ceea-467f-a8f5-5a2b4c1d2e3f")
    first = edge.http.post("/v1/auth/register", json=body)
    again = edge.http.post("/v1/auth/register", json=body)
    assert first.status_code == again.status_code == 200
    assert first.json()["user"]["id"] == again.json()["user"]["id"]
    taken = edge.http.post("/v1/auth/register", json={**body, "email": email.upper(), "requestId": ""})
    assert taken.status_code == 409


# -- brute force ----------------------------------------------------------------------------------
def test_repeated_wrong_passwords_lock_the_account_without_revealing_whether_it_exists(edge, mesh):
    person = edge.register_patient()
    channel, stub = grpc_stub(mesh)
    with channel:

        def login(email: str, password: str) -> tuple[grpc.StatusCode, str]:
            try:
                stub.Login(um_pb.LoginRequest(email=email, password=password), timeout=10)
            except grpc.RpcError as err:
                return err.code(), err.details()
            return grpc.StatusCode.OK, ""

        wrong = [login(person.email, "not the password at all") for _ in range(5)]
        unknown = [login(unique_email("nobody"), "not the password at all") for _ in range(5)]
        assert set(wrong) == set(unknown) == {(grpc.StatusCode.UNAUTHENTICATED, "invalid email or password")}
        # Locked now: even the right password gets the same answer.
        assert login(person.email, PASSWORD) == (grpc.StatusCode.UNAUTHENTICATED, "invalid email or password")


# -- events ---------------------------------------------------------------------------------------
def test_account_changes_are_published_as_events_without_secrets(edge, mesh):
    from clinic.user_management.v1 import events_pb2
    from tests.support.kafka import read_topic

    admin = edge.admin()
    person = edge.register_patient(phoneNumber="+4915112345678")
    edge.http.patch(
        f"/v1/users/{person.user_id}",
        params={"update_mask": "display_name"},
        json={"displayName": "Patty"},
        headers=person.auth,
    )
    edge.http.post(f"/v1/users/{person.user_id}:deactivate", json={}, headers=admin.auth)

    def events_of_person():
        records = read_topic(mesh.kafka_bootstrap, "clinic.user_management.v1.events")
        return [r for r in records if r.key == person.user_id.encode()]

    mine = until(
        lambda: len(events_of_person()) >= 3 and events_of_person(), within=15, what="three user events"
    )
    types = [r.headers["ce_type"].decode() for r in mine]
    assert types == [
        "clinic.user_management.v1.UserRegistered",
        "clinic.user_management.v1.UserUpdated",
        "clinic.user_management.v1.UserDeactivated",
    ]
    registered = events_pb2.UserRegistered.FromString(mine[0].value)
    assert (registered.email, registered.phone_number, registered.version) == (
        person.email,
        "+4915112345678",
        1,
    )
    assert events_pb2.UserUpdated.FromString(mine[1].value).display_name == "Patty"
    assert events_pb2.UserDeactivated.FromString(mine[2].value).version == 3
    for record in mine:
        assert PASSWORD.encode() not in record.value
        assert b"$argon2" not in record.value and b"eyJ" not in record.value  # no hash, no token


def test_staff_list_users_by_role_page_by_page_and_patients_may_not(edge):
    admin = edge.admin()
    family = f"Pager{uuid.uuid4().hex[:8]}"
    nurses = {edge.create_staff(admin, "NURSE", familyName=family).user_id for _ in range(3)}
    edge.create_staff(admin, "DOCTOR", familyName=family, specialty="Testing")

    seen, token, pages, tokens = [], "", 0, []
    while True:
        params = {"role": "NURSE", "query": family, "page_size": 2, "page_token": token}
        reply = edge.http.get("/v1/users", params=params, headers=admin.auth)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        seen += body.get("users", [])
        pages += 1
        token = body.get("nextPageToken", "")
        if not token:
            break
        tokens.append(token)
    assert pages == 2
    assert {u["id"] for u in seen} == nurses and {u["role"] for u in seen} == {"ROLE_NURSE"}

    other_filter = edge.http.get(
        "/v1/users",
        params={"role": "DOCTOR", "query": family, "page_token": tokens[0]},
        headers=admin.auth,
    )
    assert other_filter.status_code == 400 and "page_token" in other_filter.json()["message"]
    patient = edge.register_patient()
    assert edge.http.get("/v1/users", headers=patient.auth).status_code == 403


def test_an_admin_cannot_change_their_own_role_or_status(edge):
    admin = edge.admin()
    me = edge.http.get("/v1/users/me", headers=admin.auth).json()["user"]
    reply = edge.http.patch(
        f"/v1/users/{me['id']}",
        params={"update_mask": "role"},
        json={"role": "ROLE_PATIENT"},
        headers=admin.auth,
    )
    assert reply.status_code == 403 and "their own role" in reply.json()["message"]
    assert edge.http.post(f"/v1/users/{me['id']}:deactivate", json={}, headers=admin.auth).status_code == 403
    assert edge.http.get("/v1/users/me", headers=admin.auth).json()["user"]["role"] == "ROLE_ADMIN"
