import grpc
from google.rpc import error_details_pb2, status_pb2

from clinic_platform.errors import FieldViolation, InvalidArgument, NotFound
from clinic_platform.interceptors import STATUS_DETAILS_KEY, status_of


def test_invalid_argument_carries_a_bad_request_detail_per_field():
    code, trailer = status_of(
        InvalidArgument("start_time", "must be in the future", FieldViolation("doctor_id", "is required"))
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    ((key, raw),) = trailer
    assert key == STATUS_DETAILS_KEY
    status = status_pb2.Status.FromString(raw)
    assert status.message == "start_time: must be in the future; doctor_id: is required"
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [v.field for v in bad_request.field_violations] == ["start_time", "doctor_id"]


def test_other_errors_map_to_their_code_with_the_message():
    code, trailer = status_of(NotFound("appointment not found"))
    assert code is grpc.StatusCode.NOT_FOUND
    assert status_pb2.Status.FromString(trailer[0][1]).message == "appointment not found"
