"""Issue 11: the hostile inputs that once gave 500s (or were accepted) are each a clear 4xx that
names the problem, with nothing changed, through the edge and straight over gRPC."""

from __future__ import annotations

import concurrent.futures
import uuid

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from clinic.appointments.v1 import appointments_service_pb2 as ap
from clinic.appointments.v1 import appointments_service_pb2_grpc as ap_rpc
from clinic.appointments.v1 import resources_pb2 as ap_res
from clinic.payment.v1 import payment_service_pb2 as pay
from clinic.payment.v1 import payment_service_pb2_grpc as pay_rpc
from clinic.payment.v1 import resources_pb2 as pay_res
from clinic.user_management.v1 import resources_pb2 as um_res
from clinic.user_management.v1 import user_management_service_pb2 as um
from clinic.user_management.v1 import user_management_service_pb2_grpc as um_rpc
from tests.support.clinic import at, doctor_with_schedule, future_day, known_patient
from tests.support.identity import PASSWORD, Edge, unique_email

INTERNALS = ("Traceback", "class '", "Error", "Exception", "SELECT", "INSERT", "UPDATE ", "asyncpg")


@pytest.fixture(scope="module")
def people(mesh):
    edge = Edge(mesh)
    admin = edge.admin()
    doctor = doctor_with_schedule(edge, admin)
    patient = known_patient(edge, mesh)
    yield edge, admin, doctor, patient
    edge.close()


def refused(reply, field: str, status: int = 400) -> dict:
    """A 4xx JSON error whose BadRequest detail names `field`, with no internals in it."""
    assert reply.status_code == status, reply.text
    assert not any(word in reply.text for word in INTERNALS), reply.text
    body = reply.json()
    fields = [v["field"] for d in body.get("details", []) for v in d.get("fieldViolations", [])]
    assert field in fields, body
    return body


def grpc_refused(err: grpc.RpcError, field: str) -> None:
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, err.details()
    status = status_pb2.Status.FromString(dict(err.trailing_metadata())["grpc-status-details-bin"])
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert field in [v.field for v in bad_request.field_violations], bad_request
    assert not any(word in err.details() for word in INTERNALS), err.details()


def stub(mesh, service: str):
    channel = grpc.insecure_channel(f"127.0.0.1:{mesh.ports.services[service]}")
    return channel, {
        "user_management": um_rpc.UserManagementServiceStub,
        "appointments": ap_rpc.AppointmentsServiceStub,
    }[service](channel)


def auth(person) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {person.access_token}")]


# 1. Invalid UTF-8 in a path or query value ----------------------------------------------------------


def test_invalid_utf8_in_a_path_or_query_value_is_refused_at_the_edge_naming_the_part(people):
    edge, admin, _, _ = people
    for target, message in (
        ("/v1/doctors/%FF%FE", "the path is not valid UTF-8"),
        ("/v1/appointments?status=%ED%A0%80", 'query parameter "status" is not valid UTF-8'),  # a surrogate
        (
            "/v1/appointments?page_size=1&status=%C0%AF",
            'query parameter "status" is not valid UTF-8',
        ),  # overlong
        ("/v1/doctors?%FF=1", "a query parameter name is not valid UTF-8"),
    ):
        reply = edge.http.get(target, headers=admin.auth)
        assert (reply.status_code, reply.json()) == (400, {"code": 3, "message": message}), target
    # Valid UTF-8 beyond ASCII passes the edge (and finds no such doctor).
    assert (
        edge.http.get(
            "/v1/doctors?specialty=Kardiologie%20%C3%A4%F0%9F%98%80", headers=admin.auth
        ).status_code
        == 200
    )


def test_invalid_utf8_over_grpc_is_invalid_argument_naming_the_field(people, mesh):
    _, admin, _, _ = people
    raw = um.GetUserRequest(user_id="x").SerializeToString().replace(b"x", b"\xff\xfe")
    with grpc.insecure_channel(f"127.0.0.1:{mesh.ports.services['user_management']}") as channel:
        call = channel.unary_unary("/clinic.user_management.v1.UserManagementService/GetUser")
        with pytest.raises(grpc.RpcError) as err:
            call(raw, metadata=auth(admin))
    grpc_refused(err.value, "user_id")


# 2. NUL bytes in a stored or queried string -----------------------------------------------------------


def test_a_nul_byte_is_refused_where_it_would_be_stored_or_queried(people, mesh):
    edge, admin, doctor, patient = people
    email = unique_email()
    body = {"email": email, "password": PASSWORD, "givenName": "a\u0000b", "familyName": "T"}
    refused(edge.http.post("/v1/auth/register", json=body), "given_name")
    assert edge.http.post("/v1/auth/login", json={"email": email, "password": PASSWORD}).status_code == 401
    refused(edge.http.get("/v1/doctors", params={"specialty": "a\x00b"}, headers=admin.auth), "specialty")
    refused(edge.http.get("/v1/users", params={"query": "a\x00b"}, headers=admin.auth), "query")

    booked = edge.http.post(
        "/v1/appointments",
        json={"doctorId": doctor.user_id, "startTime": at(future_day(3), "11:00"), "visitType": "CONSULT"},
        headers=patient.auth,
    )
    assert booked.status_code == 200, booked.text
    appointment = booked.json()["appointment"]["id"]
    cancel = edge.http.delete(
        f"/v1/appointments/{appointment}", params={"reason": "a\x00b"}, headers=patient.auth
    )
    refused(cancel, "reason")
    still = edge.http.get(f"/v1/appointments/{appointment}", headers=patient.auth).json()["appointment"]
    assert still["status"] == "APPOINTMENT_STATUS_CONFIRMED"

    template = edge.http.get("/v1/notifications/templates", headers=admin.auth).json()["templates"][0]
    update = edge.http.patch(
        f"/v1/notifications/templates/{template['id']}",
        params={"update_mask": "body"},
        json={"body": "Hello\u0000"},
        headers=admin.auth,
    )
    refused(update, "template.body")
    after = edge.http.get(f"/v1/notifications/templates/{template['id']}", headers=admin.auth).json()
    assert after["template"]["body"] == template["body"]

    channel, users = stub(mesh, "user_management")
    with channel, pytest.raises(grpc.RpcError) as err:
        users.UpdateUser(
            um.UpdateUserRequest(
                user_id=patient.user_id,
                user=um_res.User(given_name="a\x00b"),
                update_mask={"paths": ["given_name"]},
            ),
            metadata=auth(patient),
        )
    grpc_refused(err.value, "user.given_name")


# 3. Numeric enum values out of range ------------------------------------------------------------------


def test_an_undefined_enum_number_is_a_400_and_a_patient_creating_a_user_gets_403_first(people, mesh):
    edge, admin, _, patient = people
    email = unique_email("staff")
    user = {"email": email, "givenName": "a", "familyName": "b", "role": 999}
    denied = edge.http.post("/v1/users", json={"user": user, "password": PASSWORD}, headers=patient.auth)
    assert denied.status_code == 403, denied.text  # the role gate comes before the validation
    refused(
        edge.http.post("/v1/users", json={"user": user, "password": PASSWORD}, headers=admin.auth),
        "user.role",
    )
    minus = {**user, "role": -1}
    refused(
        edge.http.post("/v1/users", json={"user": minus, "password": PASSWORD}, headers=admin.auth),
        "user.role",
    )
    assert edge.http.post("/v1/auth/login", json={"email": email, "password": PASSWORD}).status_code == 401

    prefs = edge.http.patch(
        f"/v1/users/{patient.user_id}/notificationPreferences",
        params={"update_mask": "opted_out_channels"},
        json={"optedOutChannels": [7]},
        headers=patient.auth,
    )
    refused(prefs, "notification_preferences.opted_out_channels[0]")

    channel, users = stub(mesh, "user_management")
    request = um.CreateUserRequest(user=um_res.User(email=email, given_name="a", family_name="b", role=999))
    with channel, pytest.raises(grpc.RpcError) as err:
        users.CreateUser(request, metadata=auth(admin))
    grpc_refused(err.value, "user.role")


# 4. Extreme timestamps ----------------------------------------------------------------------------------


def test_extreme_timestamps_are_a_400_naming_the_field(people, mesh):
    edge, _, doctor, patient = people
    for start in ("9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", {"seconds": 1, "nanos": -1}):
        body = {"doctorId": doctor.user_id, "startTime": start, "visitType": "CONSULT"}
        refused(edge.http.post("/v1/appointments", json=body, headers=patient.auth), "appointment.start_time")

    for params in (
        {"date": "9999-12-31"},
        {"start_date": "9999-12-30", "end_date": "9999-12-31"},
        {"start_date": "0001-01-01", "end_date": "0001-01-02"},
    ):
        field = next(iter(params))
        slots = edge.http.get(
            "/v1/appointments/available", params={"doctor_id": doctor.user_id, **params}, headers=patient.auth
        )
        refused(slots, field)
        refused(edge.http.get("/v1/appointments", params=params, headers=patient.auth), field)
    refused(
        edge.http.patch(
            f"/v1/users/{patient.user_id}",
            params={"update_mask": "birth_date"},
            json={"birthDate": {"year": 9999, "month": 12, "day": 31}},
            headers=patient.auth,
        ),
        "user.birth_date",
    )

    channel, appointments = stub(mesh, "appointments")
    appointment = ap_res.Appointment(doctor_id=doctor.user_id, visit_type="CONSULT")
    appointment.start_time.seconds = 253402300799  # 9999-12-31T23:59:59Z
    with channel, pytest.raises(grpc.RpcError) as err:
        appointments.CreateAppointment(
            ap.CreateAppointmentRequest(appointment=appointment), metadata=auth(patient)
        )
    grpc_refused(err.value, "appointment.start_time")


# 5. A megabyte in a body or header ----------------------------------------------------------------------


def test_a_megabyte_body_or_header_is_refused_and_other_requests_are_unharmed(people):
    edge, admin, _, patient = people
    huge = "a" * 1_000_000
    bodies = [
        ("/v1/appointments", {"doctorId": huge, "startTime": "2027-01-01T10:00:00Z", "visitType": "CONSULT"}),
        ("/v1/users", {"user": {"email": huge, "givenName": "a", "familyName": "b", "role": "ROLE_PATIENT"}}),
    ]

    def normal() -> int:
        return edge.http.get("/v1/users/me", headers=admin.auth).status_code

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        others = [pool.submit(normal) for _ in range(20)]
        for path, body in bodies:
            reply = edge.http.post(path, json=body, headers=admin.auth)
            assert reply.status_code == 413, reply.text[:300]
            assert reply.json()["code"] == 3
        assert [f.result() for f in others] == [200] * 20
    big_header = edge.http.get("/v1/users/me", headers={**patient.auth, "x-padding": "a" * 40_000})
    assert big_header.status_code == 431


def test_a_megabyte_id_over_grpc_is_a_short_answer_and_the_connection_survives(people, mesh):
    _, admin, _, _ = people
    channel, users = stub(mesh, "user_management")
    with channel:
        big = users.GetUser.future(um.GetUserRequest(user_id="a" * 1_000_000), metadata=auth(admin))
        small = users.GetUser.future(um.GetUserRequest(user_id=str(uuid.uuid4())), metadata=auth(admin))
        with pytest.raises(grpc.RpcError) as err:
            big.result()
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert len(err.value.details()) <= 500
        with pytest.raises(grpc.RpcError) as missing:
            small.result()
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND  # answered, not reset


# 6. An oversized template -------------------------------------------------------------------------------


def test_an_oversized_template_cannot_be_saved_and_templates_stay_readable(people):
    edge, admin, _, _ = people
    template = edge.http.get("/v1/notifications/templates", headers=admin.auth).json()["templates"][0]
    path = f"/v1/notifications/templates/{template['id']}"
    too_big = edge.http.patch(
        path, params={"update_mask": "body"}, json={"body": "x" * 1_000_000}, headers=admin.auth
    )
    assert too_big.status_code == 413
    for field, size in (("body", 10_001), ("subject", 201)):
        reply = edge.http.patch(
            path, params={"update_mask": field}, json={field: "x" * size}, headers=admin.auth
        )
        refused(reply, f"template.{field}")
    assert edge.http.get(path, headers=admin.auth).json()["template"]["body"] == template["body"]
    assert edge.http.get("/v1/notifications/templates", headers=admin.auth).status_code == 200


# 7. Money out of range; bodies that are not exactly a JSON object of the message's fields -------------


def test_money_with_nanos_out_of_range_or_the_wrong_sign_is_refused(people, mesh):
    edge, admin, _, _ = people
    before = edge.http.get("/v1/billing/fees", headers=admin.auth).json()
    for price in (
        {"currencyCode": "EUR", "units": "0", "nanos": 2_000_000_000},
        {"currencyCode": "EUR", "units": "5", "nanos": -1},
    ):
        reply = edge.http.patch(
            "/v1/billing/fees/CONSULT",
            params={"update_mask": "price"},
            json={"price": price},
            headers=admin.auth,
        )
        refused(reply, "fee.price.nanos")
    assert edge.http.get("/v1/billing/fees", headers=admin.auth).json() == before

    with grpc.insecure_channel(f"127.0.0.1:{mesh.ports.services['payment']}") as channel:
        fee = pay_res.Fee(visit_type="CONSULT", price={"currency_code": "EUR", "nanos": 2_000_000_000})
        request = pay.UpdateFeeRequest(fee=fee, update_mask={"paths": ["price"]})
        with pytest.raises(grpc.RpcError) as err:
            pay_rpc.PaymentServiceStub(channel).UpdateFee(request, metadata=auth(admin))
    grpc_refused(err.value, "fee.price.nanos")
    assert edge.http.get("/v1/billing/fees", headers=admin.auth).json() == before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{'a': 1}", "malformed JSON: expected a member name at byte 2"),
        (b'{"a": 1}', 'unknown field "a"'),
        (b'{"userId": "x"}', 'unknown field "userId"'),  # bound by the path, not the body
        (b'{"requestId": "1", "requestId": "2"}', 'duplicate member "requestId" in the JSON body'),
        (b"", "the body must be a JSON object (send {} for none)"),
        (b"[]", "the body must be a JSON object"),
        (b"{} {}", "malformed JSON: unexpected data after the value at byte 4"),
    ],
)
def test_a_body_that_is_not_exactly_a_json_object_of_the_request_changes_nothing(people, body, message):
    edge, admin, _, _ = people
    target = edge.register_patient()
    path = f"/v1/users/{target.user_id}:deactivate"
    reply = edge.http.post(path, content=body, headers={**admin.auth, "content-type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert reply.json() == {"code": 3, "message": message}
    assert edge.http.get("/v1/users/me", headers=target.auth).json()["user"]["status"] == "USER_STATUS_ACTIVE"


def test_unknown_fields_at_any_depth_of_an_ordinary_body_are_a_400(people):
    edge, _, _, patient = people
    path = f"/v1/users/{patient.user_id}"
    before = edge.http.get(path, headers=patient.auth).json()
    for body, message in (
        ({"givenName": "New", "nickname": "x"}, 'unknown field "nickname"'),
        ({"givenName": "New", "birthDate": {"year": 1990, "era": 1}}, 'unknown field "era" in birthDate'),
    ):
        reply = edge.http.patch(path, params={"update_mask": "given_name"}, json=body, headers=patient.auth)
        assert (reply.status_code, reply.json()["message"]) == (400, message)
    assert edge.http.get(path, headers=patient.auth).json() == before


def test_ids_page_sizes_and_list_sizes_follow_the_rules_declared_in_the_contracts(people):
    edge, admin, doctor, _ = people
    body = refused(edge.http.get("/v1/doctors/" + "a" * 5000, headers=admin.auth), "doctor_id")
    assert len(body["message"]) <= 500  # the value is never echoed
    refused(edge.http.get("/v1/appointments", params={"page_size": -1}, headers=admin.auth), "page_size")
    hours = [{"dayOfWeek": "MONDAY", "startTime": {"hours": 9}, "endTime": {"hours": 10}}] * 101
    reply = edge.http.patch(
        f"/v1/doctors/{doctor.user_id}/schedule",
        params={"update_mask": "working_hours"},
        json={"workingHours": hours},
        headers=admin.auth,
    )
    refused(reply, "schedule.working_hours")
