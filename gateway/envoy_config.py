"""The Envoy edge's configuration, built from the contracts so it serves exactly the public API.

Filters, in order: health check (`/healthz` answers 200 only while every service passes Envoy's
active gRPC health check) -> buffer (a body over `max_body_bytes` is 413; headers over
`max_header_kb` are 431, from the connection manager) -> jwt_authn (every route needs a valid
access token except the open RPCs of `clinic_platform.auth.OPEN_METHODS`) -> strict input (a
Lua filter, gateway/strict_json.lua: the path and query are UTF-8 once percent-decoded, and a
body must be one JSON object, well formed, without duplicate or unknown members, which the
transcoder would let through) -> the gRPC-JSON
transcoder -> the local rate limit (a global bucket, plus a per-client bucket on login and
registration) -> the router.

Routes are generated from the descriptor set: one exact route per RPC that carries a
`google.api.http` rule, so internal RPCs cannot be reached from outside, not even as raw gRPC.
Routes live in their own file (RDS from a path) shared by the HTTP and the TLS listener, so both
use the same rate-limit buckets. Replies Envoy makes itself are JSON like the services' errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from clinic_platform.auth import OPEN_METHODS, RATE_LIMITED_METHODS
from gateway.contracts import http_rules, load
from gateway.strict_json import lua_source

JWT_PROVIDER = "clinic_mesh"
ROUTE_CONFIG = "public_api"


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
    http_method: str  # GET, POST, PATCH, DELETE
    http_path: str  # the REST path template, e.g. /v1/appointments/{appointment_id}

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
    tls_port: int | None = None
    tls_certificate: Path | None = None
    tls_private_key: Path | None = None
    request_timeout_seconds: float = 15.0
    jwt_issuer: str = "clinic-mesh"
    jwt_audience: str = "clinic-mesh-api"
    # Envoy refreshes the JWKS every cache period (it never refetches on an unknown kid), so a
    # rotated key must be published longer than this before it signs (KEY_PUBLISH_DELAY_SECONDS).
    jwks_cache_seconds: int = 30
    clock_skew_seconds: int = 10
    login_burst: int = 5  # per client address
    login_per_minute: int = 10
    global_per_second: int = 2000
    # Proxies in front of Envoy that append X-Forwarded-For (0 locally: the peer is the client).
    trusted_proxy_hops: int = 0
    # The largest request body and header block the edge takes (413 / 431 beyond): far above any
    # real request, far below what could make a service's answer (an echo, an error trailer)
    # exceed a peer's limits and reset a shared HTTP/2 connection.
    max_body_bytes: int = 64 * 1024
    max_header_kb: int = 32


def public_rpcs(descriptor_set: Path) -> list[PublicRpc]:
    rpcs = []
    for file, service, method, rule in http_rules(load(descriptor_set)):
        verb = rule.WhichOneof("pattern")
        rpcs.append(
            PublicRpc(
                file.package.split(".")[1],
                f"{file.package}.{service.name}",
                method.name,
                verb.upper(),
                getattr(rule, verb),
            )
        )
    return rpcs


def _typed(type_name: str, **config) -> dict:
    return {"@type": f"type.googleapis.com/{type_name}", **config}


def _address(host: str, port: int) -> dict:
    return {"socket_address": {"address": host, "port_value": port}}


def _static_cluster(name: str, host: str, port: int) -> dict:
    return {
        "name": name,
        "type": "STATIC" if host[0].isdigit() else "STRICT_DNS",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(host, port)}}]}],
        },
    }


def _service_cluster(upstream: Upstream) -> dict:
    return {
        **_static_cluster(upstream.service, upstream.host, upstream.port),
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _typed(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                explicit_http_config={"http2_protocol_options": {}},
            )
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


def _always(percent: int = 100, key: str = "edge.ratelimit") -> dict:
    return {"default_value": {"numerator": percent, "denominator": "HUNDRED"}, "runtime_key": key}


LOCAL_RATE_LIMIT = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"


def _global_rate_limit(config: EdgeConfig) -> dict:
    per_second = config.global_per_second
    return _typed(
        LOCAL_RATE_LIMIT,
        stat_prefix="edge",
        token_bucket={"max_tokens": per_second, "tokens_per_fill": per_second, "fill_interval": "1s"},
        filter_enabled=_always(),
        filter_enforced=_always(),
        enable_retry_after_header=True,
        rate_limited_as_resource_exhausted=True,
    )


def _per_client_rate_limit(config: EdgeConfig) -> dict:
    """One token bucket per client address (an empty descriptor value makes one per value)."""
    refill_seconds = max(1, round(60 / config.login_per_minute))
    return {
        **_global_rate_limit(config),
        "stat_prefix": "edge_per_client",
        "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
        "rate_limits": [{"actions": [{"remote_address": {}}]}],
        "descriptors": [
            {
                "entries": [{"key": "remote_address", "value": ""}],
                "token_bucket": {
                    "max_tokens": config.login_burst,
                    "tokens_per_fill": 1,
                    "fill_interval": f"{refill_seconds}s",
                },
            }
        ],
        "max_dynamic_descriptors": 10000,
        "always_consume_default_token_bucket": False,
    }


OPENAPI_PATH = "/openapi.json"


def _openapi_route(config: EdgeConfig) -> dict:
    """The OpenAPI document of exactly these routes, served by Envoy itself (open, no token)."""
    from tools.openapi import render

    return {
        "match": {"path": OPENAPI_PATH, "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
        "direct_response": {"status": 200, "body": {"inline_string": render(config.descriptor_set)}},
        "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"}}],
        "typed_per_filter_config": {  # not an RPC: the transcoder would answer 404
            "envoy.filters.http.grpc_json_transcoder": {
                "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                "disabled": True,
            }
        },
    }


def route_config(config: EdgeConfig, rpcs: list[PublicRpc]) -> dict:
    timeout = f"{config.request_timeout_seconds}s"
    routes = [_openapi_route(config)]
    for rpc in sorted(rpcs, key=lambda r: r.path):
        route = {"match": {"path": rpc.path}, "route": {"cluster": rpc.service, "timeout": timeout}}
        if rpc.path in RATE_LIMITED_METHODS:
            route["typed_per_filter_config"] = {
                "envoy.filters.http.local_ratelimit": _per_client_rate_limit(config)
            }
        routes.append(route)
    return {
        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "name": ROUTE_CONFIG,
        "max_direct_response_body_size_bytes": 1024 * 1024,
        "virtual_hosts": [{"name": "clinic", "domains": ["*"], "routes": routes}],
    }


def _jwt_authn(config: EdgeConfig, rpcs: list[PublicRpc]) -> dict:
    def exact(path: str, method: str) -> dict:
        return {"match": {"path": path, "headers": [{"name": ":method", "string_match": {"exact": method}}]}}

    open_rules = [exact("/healthz", "GET"), exact(OPENAPI_PATH, "GET")]
    for rpc in rpcs:
        if rpc.path in OPEN_METHODS:
            open_rules += [exact(rpc.http_path, rpc.http_method), exact(rpc.path, "POST")]
    cache = config.jwks_cache_seconds
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": _typed(
            "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            providers={
                JWT_PROVIDER: {
                    "issuer": config.jwt_issuer,
                    "audiences": [config.jwt_audience],
                    "remote_jwks": {
                        # Served through this very listener (transcoded GetJwks).
                        "http_uri": {
                            "uri": f"http://127.0.0.1:{config.listen_port}/.well-known/jwks.json",
                            "cluster": "edge_self",
                            "timeout": "2s",
                        },
                        "cache_duration": f"{cache}s",
                        "async_fetch": {"fast_listener": True, "failed_refetch_duration": "1s"},
                        "retry_policy": {
                            "num_retries": 2,
                            "retry_back_off": {"base_interval": "0.2s", "max_interval": "2s"},
                        },
                    },
                    "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
                    "forward": True,  # services verify the token again
                    "require_expiration": True,
                    "clock_skew_seconds": config.clock_skew_seconds,
                    # Remember verified tokens (expiry is still checked on every use).
                    "jwt_cache_config": {"jwt_cache_size": 10000},
                }
            },
            rules=[*open_rules, {"match": {"prefix": "/"}, "requires": {"provider_name": JWT_PROVIDER}}],
        ),
    }


# Replies Envoy makes itself get the body services' errors have (google.rpc.Status as JSON), with
# the gRPC code that matches the HTTP status, so a client parses one error shape.
GRPC_CODE_OF_HTTP_STATUS = {
    200: 0, 400: 3, 401: 16, 403: 7, 404: 5, 409: 10, 413: 3, 429: 8, 431: 3, 501: 12, 503: 14, 504: 4,
}  # fmt: skip


def _status_body(code: int) -> dict:
    return {
        "json_format": {"code": code, "message": "%LOCAL_REPLY_BODY%"},
        "content_type": "application/json",
    }


def _local_replies() -> dict:
    # The OpenAPI document is a direct response, so a local reply too: its body stays as it is.
    openapi = {
        "filter": {"header_filter": {"header": {"name": ":path", "string_match": {"exact": OPENAPI_PATH}}}},
        "body_format_override": {"text_format": "%LOCAL_REPLY_BODY%", "content_type": "application/json"},
    }
    mappers = [openapi] + [
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


def _access_log(listener: str) -> dict:
    """One JSON line per request on Envoy's stdout (the stack keeps it in var/log/envoy.log)."""
    fields = {
        "time": "%START_TIME%",
        "listener": listener,
        "request_id": "%REQ(X-REQUEST-ID)%",
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "rpc": "%REQ(:PATH)%",
        "status": "%RESPONSE_CODE%",
        "grpc_status": "%GRPC_STATUS_NUMBER%",
        "flags": "%RESPONSE_FLAGS%",
        "ms": "%DURATION%",
        "upstream": "%UPSTREAM_CLUSTER%",
        "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    }
    return {
        "name": "envoy.access_loggers.stdout",
        "typed_config": _typed(
            "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog", log_format={"json_format": fields}
        ),
    }


def _connection_manager(
    config: EdgeConfig, rpcs: list[PublicRpc], stat_prefix: str, routes_file: Path
) -> dict:
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
        {
            "name": "envoy.filters.http.buffer",
            "typed_config": _typed(
                "envoy.extensions.filters.http.buffer.v3.Buffer", max_request_bytes=config.max_body_bytes
            ),
        },
        _jwt_authn(config, rpcs),
        {
            "name": "envoy.filters.http.lua",
            "typed_config": _typed(
                "envoy.extensions.filters.http.lua.v3.Lua",
                default_source_code={"inline_string": lua_source(config.descriptor_set)},
            ),
        },
        {
            "name": "envoy.filters.http.grpc_json_transcoder",
            "typed_config": _typed(
                "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
                proto_descriptor=str(config.descriptor_set),
                services=sorted({rpc.grpc_service for rpc in rpcs}),
                convert_grpc_status=True,
                case_insensitive_enum_parsing=True,
                query_param_unescape_plus=True,  # "?reason=feeling+better" means a space, as in forms
                print_options={"always_print_enums_as_ints": False, "add_whitespace": False},
                request_validation_options={
                    "reject_unknown_method": True,
                    "reject_unknown_query_parameters": True,
                    "reject_binding_body_field_collisions": True,
                },
            ),
        },
        # After the transcoder, so the per-route limits apply to the transcoded RPC routes.
        {"name": "envoy.filters.http.local_ratelimit", "typed_config": _global_rate_limit(config)},
        {
            "name": "envoy.filters.http.router",
            "typed_config": _typed("envoy.extensions.filters.http.router.v3.Router"),
        },
    ]
    return _typed(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix=stat_prefix,
        codec_type="AUTO",
        max_request_headers_kb=config.max_header_kb,
        use_remote_address=True,  # the client address is the peer, or the trusted proxies' XFF entry
        xff_num_trusted_hops=config.trusted_proxy_hops,
        generate_request_id=True,
        preserve_external_request_id=True,  # a client's x-request-id correlates its logs with ours
        always_set_request_id_in_response=True,
        rds={
            "route_config_name": ROUTE_CONFIG,
            "config_source": {"path_config_source": {"path": str(routes_file)}, "resource_api_version": "V3"},
        },
        http_filters=http_filters,
        local_reply_config=_local_replies(),
        access_log=[_access_log(stat_prefix)],
    )


def _listener(name: str, port: int, config: EdgeConfig, manager: dict, tls: bool) -> dict:
    chain: dict = {
        "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]
    }
    if tls:
        chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": _typed(
                "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                common_tls_context={
                    "alpn_protocols": ["h2", "http/1.1"],
                    "tls_certificates": [
                        {
                            "certificate_chain": {"filename": str(config.tls_certificate)},
                            "private_key": {"filename": str(config.tls_private_key)},
                        }
                    ],
                },
            ),
        }
    return {"name": name, "address": _address(config.listen_host, port), "filter_chains": [chain]}


def write(config: EdgeConfig, path: Path) -> Path:
    """Write the bootstrap to `path` and the shared route file beside it."""
    rpcs = public_rpcs(config.descriptor_set)
    path.parent.mkdir(parents=True, exist_ok=True)
    routes_file = path.parent / "routes.json"
    routes_file.write_text(json.dumps({"resources": [route_config(config, rpcs)]}, indent=1))
    listeners = [
        _listener(
            "edge", config.listen_port, config, _connection_manager(config, rpcs, "edge", routes_file), False
        )
    ]
    if config.tls_port:
        manager = _connection_manager(config, rpcs, "edge_tls", routes_file)
        listeners.append(_listener("edge_tls", config.tls_port, config, manager, True))
    bootstrap = {
        "node": {"id": "clinic-edge", "cluster": "clinic-edge"},  # required by file-based RDS
        "admin": {"address": _address("127.0.0.1", config.admin_port)},
        "static_resources": {
            "listeners": listeners,
            "clusters": [
                *(_service_cluster(u) for u in config.upstreams),
                _static_cluster("edge_self", "127.0.0.1", config.listen_port),
            ],
        },
    }
    path.write_text(json.dumps(bootstrap, indent=1))
    return path
