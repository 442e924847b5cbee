"""The OpenAPI document: generated from the contracts, one operation per public route, fresh."""

import json
import re
from pathlib import Path

from clinic_platform.auth import OPEN_METHODS
from gateway.envoy_config import public_rpcs
from tools.openapi import DOCUMENT, document, render
from tools.protos import build_descriptor_set


def test_every_public_route_is_one_operation_with_its_parameters_and_schemas(tmp_path: Path):
    descriptor_set = build_descriptor_set(tmp_path / "api.pb")
    doc = document(descriptor_set)
    rpcs = public_rpcs(descriptor_set)
    operations = {(verb.upper(), path): op for path, ops in doc["paths"].items() for verb, op in ops.items()}
    assert set(operations) == {(r.http_method, r.http_path) for r in rpcs}
    for rpc in rpcs:
        operation = operations[(rpc.http_method, rpc.http_path)]
        in_path = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
        assert in_path == re.findall(r"\{([^}]*)\}", rpc.http_path)
        assert (operation.get("security") == []) == (rpc.path in OPEN_METHODS)
    text = json.dumps(doc)
    for ref in set(re.findall(r'"#/components/schemas/([^"]+)"', text)):
        assert ref in doc["components"]["schemas"], ref


def test_the_rules_of_the_contracts_are_in_the_schemas(tmp_path: Path):
    doc = document(build_descriptor_set(tmp_path / "api.pb"))
    user = doc["components"]["schemas"]["clinic.user_management.v1.User"]["properties"]
    assert user["email"] == {"type": "string", "maxLength": 254}
    assert user["role"]["enum"][:2] == ["ROLE_UNSPECIFIED", "ROLE_PATIENT"]
    assert user["createTime"] == {"type": "string", "format": "date-time"}
    get_user = doc["paths"]["/v1/users/{user_id}"]["get"]["parameters"][0]
    assert get_user["schema"] == {"type": "string", "format": "uuid"}


def test_the_published_document_is_up_to_date(tmp_path: Path):
    assert DOCUMENT.read_text() == render(build_descriptor_set(tmp_path / "api.pb")), (
        "docs/openapi.json is stale: run `python -m tools.openapi`"
    )
