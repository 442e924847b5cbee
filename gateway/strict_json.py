"""The edge's strict JSON filter (gateway/strict_json.lua) and the schema it checks bodies against,
built from the same descriptor set as the transcoder: for every REST route that takes a body, the
message the body becomes, and for every message the JSON names of its fields (lowerCamelCase and
the proto name, as the transcoder accepts both).

Kinds: "s" for a value whose JSON form the transcoder checks itself (scalars, enums, and the
well-known types with a special JSON form: Timestamp, FieldMask, wrappers, Struct, ...),
"m:<message>", "r:<kind>" for a list, "map:<kind>" for a map's values.
"""

from __future__ import annotations

import re
from pathlib import Path

from google.protobuf import descriptor_pb2

from gateway.contracts import http_rules, load

LUA_SOURCE = Path(__file__).with_name("strict_json.lua")
_MESSAGE = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
_REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED


def _messages(files: descriptor_pb2.FileDescriptorSet) -> dict[str, descriptor_pb2.DescriptorProto]:
    found: dict[str, descriptor_pb2.DescriptorProto] = {}

    def add(prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        name = f"{prefix}.{message.name}"
        found[name] = message
        for nested in message.nested_type:
            add(name, nested)

    for file in files.file:
        for message in file.message_type:
            add(file.package, message)
    return found


def _kind(field: descriptor_pb2.FieldDescriptorProto, messages: dict) -> str:
    if field.type != _MESSAGE:
        kind = "s"
    else:
        type_name = field.type_name.lstrip(".")
        message = messages[type_name]
        if message.options.map_entry:
            return "map:" + _kind(message.field[1], messages)
        kind = "s" if type_name.startswith("google.protobuf.") else f"m:{type_name}"
    return f"r:{kind}" if field.label == _REPEATED else kind


def _fields(message: descriptor_pb2.DescriptorProto, messages: dict, skip: set[str] = frozenset()) -> str:
    pairs = []
    for field in message.field:
        if field.name in skip:
            continue
        kind = _kind(field, messages)
        pairs += [f"{field.name}={kind}", f"{field.json_name}={kind}"]
    return " ".join(sorted(set(pairs)))


def _pattern(template: str) -> str:
    """A Lua pattern for a path template: variables match one segment."""
    parts = re.split(r"(\{[^}]*\})", template)
    out = "".join("[^/]+" if p.startswith("{") else re.sub(r"([^\w/])", r"%\1", p) for p in parts)
    return f"^{out}$"


def lua_source(descriptor_set: Path) -> str:
    files = load(descriptor_set)
    messages = _messages(files)
    routes, types = [], {}
    for _file, _service, method, rule in http_rules(files):
        if not rule.body:
            continue
        verb = rule.WhichOneof("pattern")
        template = getattr(rule, verb)
        request_type = method.input_type.lstrip(".")
        request = messages[request_type]
        if rule.body == "*":
            # The path's variables are not body fields (the transcoder would let a body value
            # collide with the path's).
            bound = set(re.findall(r"\{([^}=]*)", template))
            kind = f"m:{request_type}/{method.name}"
            types[kind[2:]] = _fields(request, messages, bound)
        else:
            (field,) = [f for f in request.field if f.name == rule.body]
            kind = _kind(field, messages)
        routes.append((verb.upper(), _pattern(template), kind))
    # The message types a body can reach.
    pending = [k for _, _, k in routes] + [
        k for fields in types.values() for k in re.findall(r"=(\S+)", fields)
    ]
    while pending:
        name = pending.pop().rpartition("m:")[2]
        if name and name not in types and name in messages:
            types[name] = _fields(messages[name], messages)
            pending += re.findall(r"=(\S+)", types[name])
    # Routes with a custom verb (`:deactivate`) first: `[^/]+` would also match "id:verb".
    routes.sort(key=lambda r: (":" not in r[1], r))
    route_lines = "".join(f"{m} {p} {k}\n" for m, p, k in routes)
    type_lines = "".join(f"{name} {{{fields}}}\n" for name, fields in sorted(types.items()))
    return (
        f"SCHEMA_ROUTES = [==[\n{route_lines}]==]\nSCHEMA_TYPES = [==[\n{type_lines}]==]\n"
        + LUA_SOURCE.read_text()
    )
