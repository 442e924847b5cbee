"""The public REST surface as the contracts declare it: every clinic RPC with a google.api.http
rule. The edge's routes, its strict-JSON filter and the OpenAPI document all walk this one list."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2


def load(descriptor_set: Path) -> descriptor_pb2.FileDescriptorSet:
    return descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())


def http_rules(
    files: descriptor_pb2.FileDescriptorSet,
) -> Iterator[
    tuple[
        descriptor_pb2.FileDescriptorProto,
        descriptor_pb2.ServiceDescriptorProto,
        descriptor_pb2.MethodDescriptorProto,
        http_pb2.HttpRule,
    ]
]:
    """(file, service, method, rule) for every RPC of ours that the edge serves."""
    for file in files.file:
        if not file.package.startswith("clinic."):
            continue
        for service in file.service:
            for method in service.method:
                if method.options.HasExtension(annotations_pb2.http):
                    yield file, service, method, method.options.Extensions[annotations_pb2.http]
