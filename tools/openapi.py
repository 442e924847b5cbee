"""The OpenAPI 3 document of the REST edge, generated from the same descriptor set and `google.api.http`
rules Envoy serves (no generator for OpenAPI 3 exists for our Python protoc toolchain; this one is
small: the contracts use no maps, oneofs or additional bindings).

    python -m tools.openapi            # write docs/openapi.json
    python -m tools.openapi check      # exit 1 when docs/openapi.json is stale

Bodies and responses follow the proto3 JSON mapping as the transcoder speaks it: lowerCamelCase
members, enums by name, 64-bit integers as strings, Timestamps as RFC 3339, field masks as
comma-separated paths, Structs as plain JSON objects. The contracts' buf.validate rules become
maxLength, format uuid, minimum and maxItems. Query parameters use the proto field names (the edge
takes both spellings).
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from buf.validate import validate_pb2
from clinic_platform.auth import OPEN_METHODS
from gateway.contracts import http_rules, load
from tools.protos import ROOT, build_descriptor_set

DOCUMENT = ROOT / "docs" / "openapi.json"
FDP = descriptor_pb2.FieldDescriptorProto
INT32 = {FDP.TYPE_INT32, FDP.TYPE_SINT32, FDP.TYPE_SFIXED32, FDP.TYPE_UINT32, FDP.TYPE_FIXED32}
INT64 = {FDP.TYPE_INT64, FDP.TYPE_SINT64, FDP.TYPE_SFIXED64, FDP.TYPE_UINT64, FDP.TYPE_FIXED64}
WELL_KNOWN = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.FieldMask": {"type": "string", "description": "comma-separated field paths"},
    "google.protobuf.Struct": {"type": "object", "description": "any JSON object"},
}
STATUS = {
    "type": "object",
    "description": "google.rpc.Status: every error, from a service or from the edge",
    "properties": {
        "code": {"type": "integer", "format": "int32"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object"}},
    },
}


class _Builder:
    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        for file in files.file:
            for message in file.message_type:
                self._add(file.package, message)
            for enum in file.enum_type:
                self.enums[f"{file.package}.{enum.name}"] = enum
        self.schemas: dict[str, dict] = {"google.rpc.Status": STATUS}

    def _add(self, prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        name = f"{prefix}.{message.name}"
        self.messages[name] = message
        for nested in message.nested_type:
            self._add(name, nested)
        for enum in message.enum_type:
            self.enums[f"{name}.{enum.name}"] = enum

    def ref(self, type_name: str) -> dict:
        if type_name in WELL_KNOWN:
            return dict(WELL_KNOWN[type_name])
        if type_name not in self.schemas:
            self.schemas[type_name] = {}  # placeholder: a message may contain itself
            self.schemas[type_name] = self.object(self.messages[type_name])
        return {"$ref": f"#/components/schemas/{type_name}"}

    def object(self, message: descriptor_pb2.DescriptorProto, skip: set[str] = frozenset()) -> dict:
        properties = {f.json_name: self.field(f) for f in message.field if f.name not in skip}
        return {"type": "object", "properties": properties, "additionalProperties": False}

    def field(self, field: descriptor_pb2.FieldDescriptorProto) -> dict:
        rules = field.options.Extensions[validate_pb2.field]
        if field.type == FDP.TYPE_MESSAGE:
            schema = self.ref(field.type_name.lstrip("."))
        elif field.type == FDP.TYPE_ENUM:
            values = self.enums[field.type_name.lstrip(".")].value
            schema = {"type": "string", "enum": [v.name for v in values]}
        else:
            schema = _scalar(field, rules)
        if field.label == FDP.LABEL_REPEATED:
            schema = {"type": "array", "items": schema}
            if rules.repeated.HasField("max_items"):
                schema["maxItems"] = rules.repeated.max_items
        return schema


def _scalar(field: descriptor_pb2.FieldDescriptorProto, rules) -> dict:
    if field.type == FDP.TYPE_BOOL:
        return {"type": "boolean"}
    if field.type in INT32:
        schema = {"type": "integer", "format": "int32"}
        if rules.int32.HasField("gte"):
            schema["minimum"] = rules.int32.gte
        return schema
    if field.type in INT64:
        return {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"}
    if field.type in (FDP.TYPE_DOUBLE, FDP.TYPE_FLOAT):
        return {"type": "number"}
    if field.type == FDP.TYPE_BYTES:
        return {"type": "string", "format": "byte"}
    schema = {"type": "string"}
    if rules.string.HasField("max_len"):
        schema["maxLength"] = rules.string.max_len
    if rules.string.uuid:
        schema["format"] = "uuid"
    return schema


def document(descriptor_set: Path) -> dict:
    files = load(descriptor_set)
    build = _Builder(files)
    paths: dict[str, dict] = {}
    for file, service, method, _rule in http_rules(files):
        rpc = f"/{file.package}.{service.name}/{method.name}"
        verb, template, operation = _operation(build, service.name, method, rpc)
        paths.setdefault(template, {})[verb] = operation
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Clinic Mesh REST API",
            "version": "v1",
            "description": "Generated from the protobuf contracts by tools/openapi.py; see docs/api.md.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(build.schemas.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
    }


def _operation(build: _Builder, service: str, method, rpc: str) -> tuple[str, str, dict]:
    rule = method.options.Extensions[annotations_pb2.http]
    verb = rule.WhichOneof("pattern")
    template = getattr(rule, verb)
    request = build.messages[method.input_type.lstrip(".")]
    bound = set(re.findall(r"\{([^}=]*)", template))
    by_name = {f.name: f for f in request.field}
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": build.field(by_name[name])}
        for name in re.findall(r"\{([^}=]*)", template)
    ]
    operation: dict = {"operationId": f"{service}.{method.name}", "tags": [service]}
    if rule.body == "*":
        schema = build.object(request, bound)
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    else:
        if rule.body:
            schema = build.field(by_name[rule.body])
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
        for field in request.field:
            if field.name in bound or field.name == rule.body:
                continue
            schema = build.field(field)
            if schema.get("type") == "array":
                parameters.append({"name": field.name, "in": "query", "schema": schema, "explode": True})
            else:
                parameters.append({"name": field.name, "in": "query", "schema": schema})
    if parameters:
        operation["parameters"] = parameters
    response = build.ref(method.output_type.lstrip("."))
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/google.rpc.Status"}}}
    operation["responses"] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": response}}},
        "default": {"description": "An error (google.rpc.Status)", "content": error},
    }
    if rpc in OPEN_METHODS:
        operation["security"] = []
    return verb, template, operation


def render(descriptor_set: Path) -> str:
    return json.dumps(document(descriptor_set), indent=1, sort_keys=False) + "\n"


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        text = render(build_descriptor_set(Path(tmp) / "api.pb"))
    if argv[:1] == ["check"]:
        if not DOCUMENT.exists() or DOCUMENT.read_text() != text:
            print("docs/openapi.json is stale: run `python -m tools.openapi` and commit it", file=sys.stderr)
            return 1
        print("docs/openapi.json is up to date")
        return 0
    DOCUMENT.write_text(text)
    print(f"wrote {DOCUMENT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
