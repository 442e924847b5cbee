"""The whole mesh on one machine: PostgreSQL, Redis, the broker, seven services and Envoy.

`Stack.up()` starts what is not running yet, in dependency order, waiting for each part to be
healthy; `Stack.down()` stops everything it started, newest first. The state folder keeps data,
logs, PID files and generated configuration, so data survives a stop and a start.

Set POSTGRES_ADMIN_URL, REDIS_URL or KAFKA_BOOTSTRAP to use an external server instead of the
embedded one (the stack then creates the service databases and topics there).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from clinic_platform import events
from clinic_platform.kafka import ensure_topics
from clinic_platform.settings import LOCAL_KAFKA_PORT, LOCAL_POSTGRES_PORT, LOCAL_REDIS_PORT, SERVICE_PORTS
from gateway import envoy_config
from local_stack.components import Broker, Envoy, Mailbox, Redis, ServiceProcess, Simulator
from local_stack.postgres import Postgres
from local_stack.processes import StartupError
from local_stack.provision import database_url, provision_databases
from local_stack.secrets import SecretFile, random_key, random_password
from local_stack.tls import ensure_certificate

SERVICES = list(SERVICE_PORTS)
LOG_OF_STEP = {"databases": "postgres", "topics": "broker"}  # steps that are not processes of their own
PUBLISHERS = [s for s in SERVICES if s != "reporting"]
ROOT = Path(__file__).resolve().parent.parent


def topics() -> list[str]:
    names = [events.topic_for(s) for s in PUBLISHERS]
    return names + [events.dlq_for(t) for t in names]


def free_port() -> int:
    """A port nothing listens on, below the kernel's ephemeral range (32768 and up), so that no
    outgoing connection's source port or port-0 listener takes it before the part binds it."""
    while True:
        port = random.randint(20000, 32000)  # noqa: S311 - not a secret
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@dataclass
class Ports:
    edge: int = 8080
    tls: int = 8443
    admin: int = 9901
    postgres: int = LOCAL_POSTGRES_PORT
    redis: int = LOCAL_REDIS_PORT
    kafka: int = LOCAL_KAFKA_PORT
    payments: int = 7101  # the payment provider simulator
    mailbox: int = 7102  # the local mailbox's HTTP reader (what it received)
    messaging: int = 7103  # the SMS and push provider simulator
    smtp: int = 2525  # the local mailbox's SMTP server
    services: dict[str, int] = field(default_factory=lambda: dict(SERVICE_PORTS))

    @classmethod
    def single_ports(cls) -> list[str]:
        """Every port but the services' (each can be moved with CLINIC_<NAME>_PORT)."""
        return [f.name for f in fields(cls) if f.name != "services"]

    @classmethod
    def from_env(cls) -> Ports:
        ports = cls()
        for name in cls.single_ports():
            value = os.environ.get(f"CLINIC_{name.upper()}_PORT")
            if value:
                setattr(ports, name, int(value))
        return ports

    @classmethod
    def free(cls) -> Ports:
        """Unused ports, for a test stack beside a running local one."""
        single = cls.single_ports()
        ports: set[int] = set()
        while len(ports) < len(single) + len(SERVICES):
            ports.add(free_port())
        chosen = iter(sorted(ports))
        return cls(**{name: next(chosen) for name in single}, services={s: next(chosen) for s in SERVICES})


Report = Callable[[str, str], None]


def _quiet(_part: str, _message: str) -> None:
    pass


class Stack:
    def __init__(
        self,
        state_dir: Path,
        ports: Ports,
        *,
        env: dict[str, str] | None = None,
        report: Report = _quiet,
        edge_options: dict | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.ports = ports
        self.report = report
        env = dict(os.environ if env is None else env)
        self.external_postgres = env.get("POSTGRES_ADMIN_URL")
        self.external_redis = env.get("REDIS_URL")
        self.external_kafka = env.get("KAFKA_BOOTSTRAP")
        self.postgres = Postgres(state_dir, ports.postgres)
        self.redis = Redis(state_dir, ports.redis)
        self.broker = Broker(state_dir, ports.kafka)
        self.mailbox = Mailbox(state_dir, ports.mailbox, ports.smtp)
        self.messaging = Simulator(state_dir, "messaging", ports.messaging)
        self.simulators = [Simulator(state_dir, "payments", ports.payments), self.mailbox, self.messaging]
        self.gateway_dir = state_dir / "gateway"
        self.envoy = Envoy(state_dir, self.gateway_dir / "envoy.json", ports.edge, ports.admin)
        self.edge_options = edge_options or {}  # EdgeConfig fields to override (tests)
        self.database_urls: dict[str, str] = {}
        self.service_env_extra: dict[str, str] = {}

    # -- addresses ------------------------------------------------------------------------------
    @property
    def redis_url(self) -> str:
        return self.external_redis or self.redis.url

    @property
    def kafka_bootstrap(self) -> str:
        return self.external_kafka or self.broker.bootstrap

    @property
    def edge_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.edge}"

    @property
    def postgres_admin_url(self) -> str:
        if self.external_postgres:
            return self.external_postgres
        return f"postgresql://postgres@/postgres?host={self.postgres.socket_dir}&port={self.ports.postgres}"

    def identity_secrets(self) -> dict[str, str]:
        """The signing-key encryption key and the first admin's credentials (generated once)."""
        return SecretFile(self.state_dir / "secrets" / "identity.json").values(
            {
                "signing_key_encryption_key": random_key,
                "bootstrap_admin_email": lambda: "admin@clinic.example",
                "bootstrap_admin_password": random_password,
            }
        )

    def records_secrets(self) -> dict[str, str]:
        """The key-encryption key of chart content ("<id>:<base64 key>", generated once)."""
        return SecretFile(self.state_dir / "secrets" / "records.json").values(
            {"records_kek": lambda: f"local-{secrets.token_hex(4)}:{random_key()}"}
        )

    def service_env(self, name: str) -> dict[str, str]:
        env = {
            "DATABASE_URL": self.database_urls[name],
            "REDIS_URL": self.redis_url,
            "KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "USER_MANAGEMENT_ADDRESS": f"127.0.0.1:{self.ports.services['user_management']}",
            "PAYMENT_PROVIDER_URL": f"http://127.0.0.1:{self.ports.payments}",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.ports.smtp),
            "MESSAGING_PROVIDER_URL": self.messaging.url,
        }
        if name == "user_management":
            env |= {key.upper(): value for key, value in self.identity_secrets().items()}
        if name == "medical_records":
            env |= {key.upper(): value for key, value in self.records_secrets().items()}
        return env | self.service_env_extra

    def service(self, name: str) -> ServiceProcess:
        return ServiceProcess(self.state_dir, name, self.ports.services[name], self.service_env(name))

    # -- lifecycle ------------------------------------------------------------------------------
    def up(self, services: list[str] | None = None, *, gateway: bool = True) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self.start_infrastructure()
        self.start_services(services or SERVICES)
        if gateway:
            self.start_gateway()
        self._save_state()
        self.report("ready", f"in {time.monotonic() - started:.1f}s")

    def start_infrastructure(self) -> None:
        if self.external_postgres:
            self.report("postgres", f"external ({_redact(self.external_postgres)})")
        else:
            self._step("postgres", self._start_postgres)
        passwords = self.postgres.passwords(SERVICES)
        self._step(
            "databases",
            lambda: asyncio.run(provision_databases(self.postgres_admin_url, passwords)),
            done=lambda _: f"{len(passwords)} ready (one database and role per service)",
        )
        if self.external_postgres:
            admin = urlsplit(self.external_postgres)
            host, port = admin.hostname or "127.0.0.1", admin.port or 5432
        else:
            host, port = "127.0.0.1", self.ports.postgres
        self.database_urls = {s: database_url(s, p, host, port) for s, p in passwords.items()}
        if self.external_redis:
            self.report("redis", f"external ({_redact(self.external_redis)})")
        else:
            self._step(
                "redis",
                self.redis.start,
                done=lambda _: f"127.0.0.1:{self.ports.redis} (append-only file on)",
            )
        if self.external_kafka:
            self.report("broker", f"external ({self.external_kafka})")
        else:
            self._step(
                "broker",
                self.broker.start,
                done=lambda _: f"127.0.0.1:{self.ports.kafka} (Tansu, memory only)",
            )
        for simulator in self.simulators:
            self._step(simulator.name, simulator.start, done=lambda _, s=simulator: s.describe())
        self._step(
            "topics",
            lambda: ensure_topics(self.kafka_bootstrap, topics()),
            done=lambda _: f"{len(topics())} ready",
        )

    def _start_postgres(self) -> None:
        created = self.postgres.init()
        if not self.postgres.running():
            self.postgres.start()
        self.report("postgres", f"127.0.0.1:{self.ports.postgres}" + (" (new cluster)" if created else ""))

    def start_services(self, names: list[str]) -> None:
        """user_management first (every other service needs its keys), then the rest together."""
        first = [n for n in names if n == "user_management"]
        for group in (first, [n for n in names if n not in first]):
            processes = [self.service(name) for name in group]
            for process in processes:
                process.launch()
            for process in processes:
                self._step(
                    process.name,
                    process.wait_ready,
                    done=lambda _, p=process: f"serving on 127.0.0.1:{p.port}",
                )

    def start_gateway(self) -> None:
        def start() -> None:
            self.write_edge_config(self.envoy.config, self.ports.edge, self.ports.admin)
            self.envoy.start()

        self._step(
            "envoy",
            start,
            done=lambda _: (
                f"edge on {self.edge_url} and https://localhost:{self.ports.tls} (admin :{self.ports.admin})"
            ),
        )

    def write_edge_config(self, path: Path, edge_port: int, admin_port: int, **options) -> Path:
        """An Envoy bootstrap for the services of this stack (tests make extra edges with it)."""
        from tools.protos import build_descriptor_set

        descriptor = build_descriptor_set(self.gateway_dir / "clinic.pb")
        certificate, private_key = ensure_certificate(self.gateway_dir / "tls")
        upstreams = [envoy_config.Upstream(s, "127.0.0.1", self.ports.services[s]) for s in SERVICES]
        settings = {
            "tls_port": self.ports.tls if edge_port == self.ports.edge else None,
            "tls_certificate": certificate,
            "tls_private_key": private_key,
            **self.edge_options,
            **options,
        }
        config = envoy_config.EdgeConfig(descriptor, upstreams, edge_port, admin_port, **settings)
        return envoy_config.write(config, path)

    def down(self) -> None:
        """Stop everything, newest first; safe to call when parts are not running."""
        steps: list[tuple[str, Callable[[], bool]]] = [("envoy", self.envoy.stop)]
        steps += [(s, self._stopper(s)) for s in reversed(SERVICES)]
        steps += [(s.name, s.stop) for s in self.simulators]
        steps += [("broker", self.broker.stop), ("redis", self.redis.stop), ("postgres", self.postgres.stop)]
        for name, stop in steps:
            if stop():
                self.report(name, "stopped")

    def _stopper(self, service: str) -> Callable[[], bool]:
        return ServiceProcess(self.state_dir, service, 0, {}).stop

    def status(self) -> dict[str, int | None]:
        parts = {"postgres": self.postgres.pid if self.postgres.running() else None}
        parts |= {"redis": self.redis.pid, "broker": self.broker.pid}
        parts |= {s.name: s.pid for s in self.simulators}
        parts |= {s: ServiceProcess(self.state_dir, s, 0, {}).pid for s in SERVICES}
        parts["envoy"] = self.envoy.pid
        return parts

    # -- helpers --------------------------------------------------------------------------------
    def _step(self, part: str, action: Callable[[], object], done: Callable[[object], str] | None = None):
        started = time.monotonic()
        try:
            result = action()
        except StartupError:
            raise
        except Exception as exc:  # whatever went wrong, say which part and where to look
            log = self.state_dir / "log" / f"{LOG_OF_STEP.get(part, part)}.log"
            where = f"; its log: {log}" if log.exists() else ""
            raise StartupError(f"{part} failed: {type(exc).__name__}: {exc}{where}") from exc
        if done is not None:
            self.report(part, f"{done(result)}  [{time.monotonic() - started:.1f}s]")
        return result

    def _save_state(self) -> None:
        (self.state_dir / "stack.json").write_text(
            json.dumps({"ports": asdict(self.ports), "edge": self.edge_url}, indent=2)
        )


def _redact(url: str) -> str:
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
