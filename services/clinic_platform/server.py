"""Server bootstrap: a service's composition root builds a ServiceApp, `run()` serves it.

    def build(settings: Settings) -> ServiceApp:
        app = ServiceApp(settings)
        db = app.use_database(store.metadata)          # engine + outbox relay, closed on exit
        app.add_servicer(add_XServiceServicer_to_server, XApi(db), x_pb2.DESCRIPTOR, "XService")
        app.add_consumer(topics, {SomeEvent: handle_some_event})
        return app

Serving: grpc.aio server with the kit interceptor, grpc.health.v1 and server reflection. On
SIGTERM/SIGINT: health turns NOT_SERVING, new calls are refused after `shutdown_delay_seconds`,
in-flight calls get `shutdown_grace_seconds` to finish, then the consumers stop, the relay
publishes what is left and flushes its producer, and pools close.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import grpc
import uvloop
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from redis.asyncio import Redis
from sqlalchemy import MetaData

from clinic_platform import events
from clinic_platform.auth import (
    Authenticator,
    KeySource,
    SessionCheck,
    TokenVerifier,
    role_gate,
)
from clinic_platform.consumer import EventConsumer, Handler
from clinic_platform.db import Database
from clinic_platform.interceptors import PreCall, ServerInterceptor
from clinic_platform.jwks import RemoteJwks, fetch_jwks
from clinic_platform.logging import configure_logging
from clinic_platform.migrations import upgrade_to_head
from clinic_platform.outbox import OutboxRelay
from clinic_platform.retention import Retention
from clinic_platform.settings import ServiceSettings

log = logging.getLogger(__name__)

HEALTH_CHECK = "/grpc.health.v1.Health/Check"

BackgroundTask = Callable[[asyncio.Event], Awaitable[None]]
Closer = Callable[[], Awaitable[None]]


class ServiceApp:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.name = settings.service_name
        self._servicers: list[tuple[Callable[[Any, grpc.aio.Server], None], Any]] = []
        self.service_names: list[str] = []
        self.background: list[BackgroundTask] = []
        self.closers: list[Closer] = []
        self.pre_call: list[PreCall] = []
        self.db: Database | None = None
        self.relay: OutboxRelay | None = None
        self.retention: Retention | None = None
        self.consumers: list[EventConsumer] = []
        self.migrations_package: str | None = None
        self.redis: Redis | None = None
        self.on_start: list[Callable[[], Awaitable[None]]] = []  # after migrations, before serving

    def add_servicer(self, add_to_server, servicer, proto_file: FileDescriptor, service: str) -> None:
        self._servicers.append((add_to_server, servicer))
        self.service_names.append(proto_file.services_by_name[service].full_name)

    def use_database(self, metadata: MetaData, *, publishes_events: bool = True) -> Database:
        """The service's database, migrated on start, with an outbox relay publishing its events."""
        s = self.settings
        self.db = Database(s.database_url, metadata, pool_size=s.db_pool_size)
        self.migrations_package = self.name
        self.closers.append(self.db.close)
        self.retention = Retention(self.db, every=timedelta(minutes=s.retention_every_minutes))
        self.retention.add_kit_rules(
            outbox=timedelta(hours=s.retention_outbox_hours),
            inbox=timedelta(hours=s.retention_inbox_hours),
            idempotency_keys=timedelta(hours=s.retention_idempotency_key_hours),
        )
        self.background.append(self.retention.run)
        if not publishes_events:
            return self.db
        self.relay = OutboxRelay(
            self.db,
            bootstrap=s.kafka_bootstrap,
            service=self.name,
            topics_to_create=[s.topic, events.dlq_for(s.topic)] if s.kafka_create_topics else [],
            partitions=s.kafka_topic_partitions,
            replay_window=timedelta(hours=s.outbox_replay_window_hours),
            one_record_per_batch=s.kafka_one_record_per_batch,
        )
        self.db.event_listeners.append(self.relay.wake)
        self.background.append(self.relay.run)
        return self.db

    def add_consumer(self, topics: list[str], handlers: dict[type, Handler]) -> EventConsumer:
        assert self.db is not None, "use_database() first: the inbox lives in the service database"
        s = self.settings
        consumer = EventConsumer(
            self.db,
            bootstrap=s.kafka_bootstrap,
            group=self.name,
            topics=topics,
            handlers=handlers,
            create_topics=s.kafka_create_topics,
            partitions=s.kafka_topic_partitions,
            batch_size=s.consumer_batch_size,
            one_record_per_batch=s.kafka_one_record_per_batch,
            fetch_wait_ms=s.kafka_fetch_wait_max_ms,
        )
        self.consumers.append(consumer)
        self.background.append(consumer.run)
        return consumer

    def use_redis(self) -> Redis:
        """The service's Redis client (sessions), closed on exit."""
        if self.redis is None:
            self.redis = Redis.from_url(self.settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
            self.closers.append(self.redis.aclose)
        return self.redis

    def authenticate(
        self, *, open_methods: frozenset[str] = frozenset(), keys: KeySource | None = None
    ) -> Authenticator:
        """Verify the access token of every call except `open_methods` (and health checks).

        Keys come from user_management's JWKS unless the service has them itself (`keys`)."""
        s = self.settings
        if keys is None:
            jwks = RemoteJwks(
                lambda: fetch_jwks(s.user_management_address), refresh_seconds=s.jwks_refresh_seconds
            )
            self.background.append(jwks.run)
            keys = jwks
        authenticator = Authenticator(
            TokenVerifier(keys, issuer=s.jwt_issuer, audience=s.jwt_audience),
            SessionCheck(self.use_redis(), s.session_cache_seconds),
            {HEALTH_CHECK, *open_methods},
        )
        self.pre_call += [authenticator, role_gate]
        return authenticator

    def on_shutdown(self, closer: Closer) -> None:
        self.closers.append(closer)


async def serve(
    app: ServiceApp, *, stop: asyncio.Event | None = None, bound: Callable[[int], None] | None = None
) -> None:
    """Serve until SIGTERM/SIGINT, or until `stop` is set when the caller passes one (in-process
    servers in tests do, and keep their own signal handling). `bound` learns the port (0 = any)."""
    s = app.settings
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)

    if app.db is not None and app.migrations_package:
        await asyncio.to_thread(upgrade_to_head, app.migrations_package, s.database_url)
    for start in app.on_start:
        await start()

    server = grpc.aio.server(
        interceptors=[
            ServerInterceptor(log_access=s.log_access, slow_ms=s.log_slow_ms, pre_call=app.pre_call)
        ],
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 4 * 1024 * 1024)],
    )
    for add_to_server, servicer in app._servicers:
        add_to_server(servicer, server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [
            *app.service_names,
            reflection.SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        ],
        server,
    )
    port = server.add_insecure_port(f"{s.grpc_host}:{s.grpc_port}")
    await server.start()
    if bound:
        bound(port)

    background_stop = asyncio.Event()
    tasks = [
        asyncio.create_task(task(background_stop), name=getattr(task, "__qualname__", "task"))
        for task in app.background
    ]
    for name in ["", *app.service_names]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    # Everything built at start-up lives for the whole run: keep it out of the collector's way,
    # and collect the young generation less often (a call allocates many short-lived objects).
    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, 20, 20)
    log.info("serving", extra={"address": f"{s.grpc_host}:{port}", "services": app.service_names})

    crashed = asyncio.ensure_future(_first_crash(tasks))
    stop_wait = asyncio.ensure_future(stop.wait())
    await asyncio.wait([stop_wait, crashed], return_when=asyncio.FIRST_COMPLETED)
    failure = crashed.result() if crashed.done() else None
    crashed.cancel()
    stop_wait.cancel()

    log.info("draining", extra={"grace_seconds": s.shutdown_grace_seconds})
    await health.enter_graceful_shutdown()
    if s.shutdown_delay_seconds:
        await asyncio.sleep(s.shutdown_delay_seconds)
    await server.stop(s.shutdown_grace_seconds)

    background_stop.set()
    _, pending = await asyncio.wait(tasks, timeout=s.shutdown_grace_seconds) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    if app.relay is not None:
        await _publish_remaining(app.relay)
        await app.relay.close()
    for closer in app.closers:
        await closer()
    log.info("stopped")
    if failure is not None:
        raise failure


async def _first_crash(tasks: list[asyncio.Task]) -> BaseException | None:
    """Wait for a background task to die with an error (they are meant to run until stopped)."""
    if not tasks:
        await asyncio.Event().wait()
    for finished in asyncio.as_completed(tasks):
        try:
            await finished
        except asyncio.CancelledError:
            continue
        except Exception as exc:
            log.exception("background task failed; shutting down")
            return exc
    return None


async def _publish_remaining(relay: OutboxRelay) -> None:
    """Publish what in-flight calls committed while draining; whatever fails waits for the next start."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5):
            while await relay.publish_batch() >= relay.batch_size:
                pass


def run(build: Callable[[Any], ServiceApp], settings_class: type[ServiceSettings]) -> None:
    """Entry point of a service process."""
    settings = settings_class()
    configure_logging(settings.service_name, settings.log_level)
    app = build(settings)
    uvloop.run(serve(app))  # libuv's loop: asyncpg and gRPC's socket work cost less CPU per call
