"""The kit's request validation: the contracts' buf.validate rules and the type invariants."""

from pathlib import Path

from google.protobuf import descriptor_pb2
from google.rpc import status_pb2

from clinic.notification.v1 import notification_service_pb2 as nt
from clinic.notification.v1 import resources_pb2 as nt_res
from clinic.payment.v1 import payment_service_pb2 as pay
from clinic.payment.v1 import resources_pb2 as pay_res
from clinic.user_management.v1 import resources_pb2 as um_res
from clinic.user_management.v1 import user_management_service_pb2 as um
from clinic_platform.auth import ROLE_GATES
from clinic_platform.errors import InvalidArgument
from clinic_platform.interceptors import MAX_MESSAGE_CHARS, status_of
from clinic_platform.validation import bad_utf8_field, violations
from tools.protos import build_descriptor_set


def fields(message) -> list[str]:
    return [v.field for v in violations(message)]


def test_a_valid_request_has_no_violations():
    user = um_res.User(email="a@example.org", given_name="Ana", family_name="Silva", role=um_res.ROLE_DOCTOR)
    assert violations(um.CreateUserRequest(user=user, password="x")) == []


def test_declared_rules_and_type_invariants_name_every_field_at_fault():
    user = um_res.User(email="a" * 255, given_name="a\x00b", role=999)
    assert fields(um.CreateUserRequest(user=user)) == ["user.email", "user.given_name", "user.role"]
    template = nt_res.Template(subject="s" * 201, body="b" * 10_001)
    assert fields(nt.UpdateTemplateRequest(template=template)) == ["template.subject", "template.body"]
    prefs = um_res.NotificationPreferences(opted_out_channels=[1, 7])
    assert fields(um.UpdateNotificationPreferencesRequest(notification_preferences=prefs)) == [
        "notification_preferences.opted_out_channels[1]"
    ]


def test_timestamps_and_money_must_be_normalised_and_in_range():
    user = um_res.User()
    user.create_time.seconds = 253402300799  # 9999-12-31T23:59:59Z
    assert fields(um.CreateUserRequest(user=user)) == ["user.create_time"]
    user.create_time.seconds, user.create_time.nanos = 0, -1
    assert fields(um.CreateUserRequest(user=user)) == ["user.create_time"]
    for units, nanos in ((0, 2_000_000_000), (5, -1), (-5, 1)):
        fee = pay_res.Fee(price={"currency_code": "EUR", "units": units, "nanos": nanos})
        assert fields(pay.UpdateFeeRequest(fee=fee)) == ["fee.price.nanos"]
    fee = pay_res.Fee(price={"currency_code": "EUR", "units": -5, "nanos": -500_000_000})
    assert fields(pay.UpdateFeeRequest(fee=fee)) == []


def test_any_string_has_a_backstop_length():
    assert fields(um.ListUsersRequest(query="q" * 65_537)) == ["query"]


def test_the_string_that_is_not_utf8_is_found_in_the_wire_bytes():
    raw = um.CreateUserRequest(user=um_res.User(email="x")).SerializeToString().replace(b"x", b"\xff")
    assert bad_utf8_field(um.CreateUserRequest.DESCRIPTOR, raw) == "user.email"


def test_error_messages_are_cut_so_an_echoed_megabyte_never_reaches_a_trailer():
    _, trailer = status_of(InvalidArgument("user_id", "a" * 1_000_000))
    status = status_pb2.Status.FromString(trailer[0][1])
    assert len(status.message) == MAX_MESSAGE_CHARS
    assert len(trailer[0][1]) < 2 * MAX_MESSAGE_CHARS + 200


def test_every_role_gate_names_a_real_rpc(tmp_path: Path):
    files = descriptor_pb2.FileDescriptorSet.FromString(build_descriptor_set(tmp_path / "d.pb").read_bytes())
    rpcs = {f"/{f.package}.{s.name}/{m.name}" for f in files.file for s in f.service for m in s.method}
    assert set(ROLE_GATES) <= rpcs
