"""Configuration from environment variables, one settings object per service.

Defaults run the local stack (see local_stack/ports.py for the same numbers); production sets
DATABASE_URL, REDIS_URL, KAFKA_BOOTSTRAP and friends from Kubernetes Secrets and ConfigMaps.
"""

from __future__ import annotations

from typing import ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The local stack's well-known ports; every one can be overridden by its variable.
LOCAL_POSTGRES_PORT = 55432
LOCAL_REDIS_PORT = 56379
LOCAL_KAFKA_PORT = 59092
SERVICE_PORTS = {
    "user_management": 50051,
    "appointments": 50052,
    "medical_records": 50053,
    "payment": 50054,
    "insurance": 50055,
    "notification": 50056,
    "reporting": 50057,
}


class ServiceSettings(BaseSettings):
    """What every service needs. A service subclasses it and sets `service_name`."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)
    service_name: ClassVar[str] = ""

    grpc_host: str = "127.0.0.1"
    grpc_port: int | None = None  # None: the service's well-known local port; 0: any free port
    database_url: str = ""  # "": the service's own database on the local stack
    db_pool_size: int = 10
    redis_url: str = f"redis://127.0.0.1:{LOCAL_REDIS_PORT}/0"
    kafka_bootstrap: str = f"127.0.0.1:{LOCAL_KAFKA_PORT}"
    # Create this service's topics (and DLQs) when missing. On for the local stack and tests;
    # production declares topics as Strimzi KafkaTopic resources instead.
    kafka_create_topics: bool = True
    kafka_topic_partitions: int = 3
    # Producers batch records, against the local broker too: it keeps every record of a
    # multi-record batch (tests/integration/test_broker_conformance.py). True sends one record per
    # produce request, at ~20x the broker CPU per event; it is only there for comparing.
    kafka_one_record_per_batch: bool = False
    # How long the broker may hold a consumer's fetch when there is nothing new. The local broker
    # answers a waiting fetch only when this runs out, so it bounds event latency; every idle
    # fetch also costs the broker CPU (see docs/performance.md).
    kafka_fetch_wait_max_ms: int = 50
    # The clinic's IANA time zone: weekly templates, "today" and the times in messages are in it.
    clinic_time_zone: str = "Europe/Berlin"
    # Access tokens: who issues them, for whom, and where their keys are published.
    jwt_issuer: str = "clinic-mesh"
    jwt_audience: str = "clinic-mesh-api"
    user_management_address: str = f"127.0.0.1:{SERVICE_PORTS['user_management']}"
    jwks_refresh_seconds: float = 30.0
    # How long a service may trust that a session is alive before asking Redis again: a logout
    # stops the session's tokens everywhere within this time.
    session_cache_seconds: float = 1.0
    log_level: str = "INFO"
    # Per-call log lines: "all", "slow" (failed calls, but ALREADY_EXISTS and FAILED_PRECONDITION,
    # and calls slower than LOG_SLOW_MS), "none".
    log_access: str = "slow"
    log_slow_ms: float = 250.0
    # Seconds between reporting NOT_SERVING and refusing new calls (lets load balancers notice),
    # then how long in-flight calls get to finish before they are cancelled.
    shutdown_delay_seconds: float = 0.0
    shutdown_grace_seconds: float = 10.0
    # Republish outbox events sent within this window when the broker turns out to be a new
    # (empty) instance, as the memory-only local broker is after a restart.
    outbox_replay_window_hours: float = 24 * 7
    # Events a consumer takes from the broker and applies in one database transaction.
    consumer_batch_size: int = 500
    # Retention (a background job): published outbox rows are kept as long as a new broker may
    # need them republished; processed inbox rows longer still, so no redelivery can find its
    # event forgotten and apply it twice; idempotency keys answer retries for this long.
    retention_outbox_hours: float = 24 * 7
    retention_inbox_hours: float = 24 * 14
    retention_idempotency_key_hours: float = 24 * 7
    retention_every_minutes: float = 60

    @field_validator("clinic_time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"CLINIC_TIME_ZONE {value!r} is not an IANA time zone") from None
        return value

    @model_validator(mode="after")
    def _inbox_outlives_replays(self) -> ServiceSettings:
        if self.retention_inbox_hours <= self.outbox_replay_window_hours:
            raise ValueError(
                "RETENTION_INBOX_HOURS must exceed OUTBOX_REPLAY_WINDOW_HOURS: a republished event"
                " whose inbox row was pruned would be applied twice"
            )
        if self.retention_outbox_hours < self.outbox_replay_window_hours:
            raise ValueError("RETENTION_OUTBOX_HOURS must be at least OUTBOX_REPLAY_WINDOW_HOURS")
        return self

    @model_validator(mode="after")
    def _local_defaults(self) -> ServiceSettings:
        name = self.service_name
        if name and self.grpc_port is None:
            object.__setattr__(self, "grpc_port", SERVICE_PORTS[name])
        if name and not self.database_url:
            object.__setattr__(
                self,
                "database_url",
                f"postgresql+asyncpg://clinic_{name}@127.0.0.1:{LOCAL_POSTGRES_PORT}/clinic_{name}",
            )
        return self

    @property
    def topic(self) -> str:
        return f"clinic.{self.service_name}.v1.events"
