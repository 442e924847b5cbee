"""The Envoy edge's configuration, built from the contracts so it serves exactly the public API.

Routes are generated from the descriptor set: one exact route per RPC that carries a
`google.api.http` rule (internal RPCs have none and so cannot be reached from outside, not even
as raw gRPC). The transcoder maps REST/JSON to those RPCs and gRPC status back to HTTP codes;
replies Envoy makes itself (unknown path, upstream down) are JSON too. `/healthz` answers 200 only
while every service passes Envoy's active gRPC health check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

SERVICE_OF_PACKAGE_PREFIX = "clinic."


@dataclass(frozen=True)
class Upstream:
    service: str  # our service name, e.g. "appointments"
    host: str
    port: int


@dataclass(frozen=True)
class PublicRpc:
    service: str  # our service name
    grpc_service: str  # full name, e.g. clinic.appointments.v1.AppointmentsService
    method: str

    @property
    def path(self) -> str:
        return f"/{self.grpc_service}/{self.method}"


@dataclass
class EdgeConfig:
    descriptor_set: Path
    upstreams: list[Upstream]
    listen_port: int
    admin_port: int
    listen_host: str = "127.0.0.1"
    request_timeout_seconds: float = 15.0
    extra_http_filters: list[dict] = field(default_factory=list)


def public_rpcs(descriptor_set: Path) -> list[PublicRpc]:
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    rpcs = []
    for file in files.file:
        if not file.package.startswith(SERVICE_OF_PACKAGE_PREFIX):
            continue
        service_name = file.package.split(".")[1]
        for service in file.service:
            for method in service.method:
                if method.options.HasExtension(annotations_pb2.http):
                    rpcs.append(PublicRpc(service_name, f"{file.package}.{service.name}", method.name))
    return rpcs


def _typed(type_name: str, **config) -> dict:
    return {"@type": f"type.googleapis.com/{type_name}", **config}


def _cluster(upstream: Upstream) -> dict:
    return {
        "name": upstream.service,
        "type": "STATIC" if upstream.host[0].isdigit() else "STRICT_DNS",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _typed(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                explicit_http_config={"http2_protocol_options": {}},
            )
        },
        "load_assignment": {
            "cluster_name": upstream.service,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": upstream.host, "port_value": upstream.port}
                                }
                            }
                        }
                    ]
                }
            ],
        },
        "health_checks": [
            {
                "timeout": "1s",
                "interval": "2s",
                "no_traffic_interval": "2s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "grpc_health_check": {},
            }
        ],
        "circuit_breakers": {
            "thresholds": [{"max_connections": 4096, "max_pending_requests": 4096, "max_requests": 4096}]
        },
    }


# Replies Envoy makes itself get the body services' errors have (google.rpc.Status as JSON), with
# the gRPC code that matches the HTTP status, so a client parses one error shape.
GRPC_CODE_OF_HTTP_STATUS = {
    200: 0,
    400: 3,
    401: 16,
    403: 7,
    404: 5,
    409: 10,
    413: 3,
    429: 8,
    501: 12,
    503: 14,
    504: 4,
}


def _status_body(code: int | str) -> dict:
    return {
        "json_format": {"code": code, "message": "%LOCAL_REPLY_BODY%"},
        "content_type": "application/json",
    }


def _local_replies() -> dict:
    mappers = [
        {
            "filter": {
                "status_code_filter": {
                    "comparison": {
                        "op": "EQ",
                        "value": {"default_value": http, "runtime_key": f"edge.reply_{http}"},
                    }
                }
            },
            "body_format_override": _status_body(grpc_code),
        }
        for http, grpc_code in GRPC_CODE_OF_HTTP_STATUS.items()
    ]
    return {"mappers": mappers, "body_format": _status_body(2)}  # anything else: UNKNOWN


def build(config: EdgeConfig) -> dict:
    rpcs = public_rpcs(config.descriptor_set)
    services = sorted({rpc.grpc_service for rpc in rpcs})
    timeout = f"{config.request_timeout_seconds}s"
    routes = [
        {"match": {"path": rpc.path}, "route": {"cluster": rpc.service, "timeout": timeout}}
        for rpc in sorted(rpcs, key=lambda r: r.path)
    ]
    http_filters = [
        {
            "name": "envoy.filters.http.health_check",
            "typed_config": _typed(
                "envoy.extensions.filters.http.health_check.v3.HealthCheck",
                pass_through_mode=False,
                headers=[{"name": ":path", "string_match": {"exact": "/healthz"}}],
                cluster_min_healthy_percentages={u.service: {"value": 100} for u in config.upstreams},
            ),
        },
        *config.extra_http_filters,
        {
            "name": "envoy.filters.http.grpc_json_transcoder",
            "typed_config": _typed(
                "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
                proto_descriptor=str(config.descriptor_set),
                services=services,
                convert_grpc_status=True,
                case_insensitive_enum_parsing=True,
                print_options={"always_print_enums_as_ints": False, "add_whitespace": False},
                request_validation_options={
                    "reject_unknown_method": True,
                    "reject_unknown_query_parameters": True,
                    "reject_binding_body_field_collisions": True,
                },
            ),
        },
        {
            "name": "envoy.filters.http.router",
            "typed_config": _typed("envoy.extensions.filters.http.router.v3.Router"),
        },
    ]
    connection_manager = _typed(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix="edge",
        codec_type="AUTO",
        generate_request_id=True,
        always_set_request_id_in_response=True,
        route_config={
            "name": "public_api",
            "virtual_hosts": [{"name": "clinic", "domains": ["*"], "routes": routes}],
        },
        http_filters=http_filters,
        local_reply_config=_local_replies(),
    )
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": config.admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "edge",
                    "address": {
                        "socket_address": {"address": config.listen_host, "port_value": config.listen_port}
                    },
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": connection_manager,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [_cluster(u) for u in config.upstreams],
        },
    }


def write(config: EdgeConfig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(build(config), indent=1))
    return path
