"""The REST edge: Envoy transcoding to all seven services, exactly as a client sees it."""

from __future__ import annotations

import json
import urllib.request
import uuid

import httpx
import pytest

from local_stack.components import grpc_serving
from local_stack.stack import SERVICES
from tests.support.identity import Edge


@pytest.fixture(scope="module")
def edge(mesh) -> httpx.Client:
    people = Edge(mesh)
    analyst = people.create_staff(people.admin(), "ANALYST")
    people.close()
    with httpx.Client(base_url=mesh.edge_url, timeout=10, headers=analyst.auth) as client:
        yield client


def test_every_service_reports_serving_and_the_edge_sees_them_all_healthy(mesh, edge):
    for service in SERVICES:
        assert grpc_serving(mesh.ports.services[service]), f"{service} is not SERVING"
    assert edge.get("/healthz").status_code == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{mesh.ports.admin}/clusters?format=json") as reply:
        clusters = json.load(reply)["cluster_statuses"]
    health = {c["name"]: c["host_statuses"][0]["health_status"] for c in clusters if c["name"] in SERVICES}
    assert set(health) == set(SERVICES)
    assert all(
        h.get("eds_health_status") == "HEALTHY" and not h.get("failed_active_health_check")
        for h in health.values()
    )


def test_a_route_whose_rpc_is_not_built_yet_is_a_501_json_error(edge):
    # Reporting is the one service no issue has built yet; its routes still answer UNIMPLEMENTED.
    reply = edge.get("/v1/reports/noShowRate", params={"start_date": "2026-11-01", "end_date": "2026-11-30"})
    assert reply.status_code == 501
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["code"] == 12  # google.rpc.Code UNIMPLEMENTED
    assert "not implemented" in body["message"]


def test_an_unknown_path_is_a_404_json_error(edge):
    reply = edge.get("/v1/no-such-thing")
    assert reply.status_code == 404
    assert reply.json() == {"code": 5, "message": "Could not resolve /v1/no-such-thing to a method."}


def test_malformed_json_is_a_400_that_points_at_the_problem(edge):
    reply = edge.post(
        "/v1/auth/login",
        content=b'{"email": "a@example.org", "password" "x"}',
        headers={"content-type": "application/json"},
    )
    assert reply.status_code == 400
    body = reply.json()
    assert body["code"] == 3  # INVALID_ARGUMENT
    assert body["message"] == "malformed JSON: expected ':' at byte 39"
    assert reply.headers["content-type"] == "application/json"


def test_an_unknown_query_parameter_is_a_400_naming_it(edge):
    reply = edge.get("/v1/reports/noShowRate", params={"colour": "blue"})
    assert reply.status_code == 400
    assert '"colour"' in reply.json()["message"]


def test_internal_rpcs_are_not_reachable_from_outside(mesh, edge):
    # GetDoctorCapacity has no http rule: not as REST, and not as raw gRPC through the edge either.
    request_id = f"internal-{uuid.uuid4()}"
    reply = edge.post(
        "/clinic.appointments.v1.AppointmentsService/GetDoctorCapacity",
        content=b"\x00\x00\x00\x00\x00",
        headers={"content-type": "application/grpc", "x-request-id": request_id},
    )
    assert reply.headers["grpc-status"] != "0"
    assert json.loads(reply.headers["grpc-message"])["code"] == 5  # Envoy's own "no route" reply
    assert request_id not in (mesh.state_dir / "log" / "appointments.log").read_text()


def test_the_request_id_travels_from_the_edge_into_the_service_log(mesh, edge):
    request_id = f"edge-test-{uuid.uuid4()}"
    reply = edge.get(
        "/v1/reports/noShowRate", params={"start_date": "2026-11-01"}, headers={"x-request-id": request_id}
    )
    assert reply.headers["x-request-id"] == request_id
    log = (mesh.state_dir / "log" / "reporting.log").read_text()
    line = next(json.loads(entry) for entry in log.splitlines() if request_id in entry)
    assert line["request_id"] == request_id
    assert line["method"] == "/clinic.reporting.v1.ReportingService/GetNoShowRate"


def test_the_edge_publishes_the_openapi_document_of_its_routes_without_a_token(mesh):
    from tools.openapi import DOCUMENT

    reply = httpx.get(f"{mesh.edge_url}/openapi.json", timeout=10)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.text == DOCUMENT.read_text()
