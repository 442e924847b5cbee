"""Starting, watching and stopping the local stack's processes by PID file."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class StartupError(RuntimeError):
    """A part of the stack did not come up; the message names it and its log."""


def start_detached(
    argv: list[str], *, log: Path, pidfile: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> int:
    """Start a process in its own session (it outlives the command that started it)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(  # noqa: S603 - argv is built by us, never from input
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    pidfile.write_text(f"{process.pid}\n{argv[0]}\n")
    return process.pid


def read_pid(pidfile: Path) -> int | None:
    """The PID in the file if that process is alive and still runs the program we started."""
    try:
        pid_line, program = [*pidfile.read_text().splitlines(), ""][:2]
        pid = int(pid_line)
    except (FileNotFoundError, ValueError):
        return None
    if not is_alive(pid):
        return None
    try:
        running = Path(f"/proc/{pid}/exe").resolve(strict=True)
    except OSError:
        return pid  # no /proc here (or not ours to read): trust the file
    return pid if not program or running == Path(program).resolve() else None


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours is dead for every purpose here.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state != "Z"


def stop_pid(pidfile: Path, *, timeout: float = 20.0, sig: int = signal.SIGTERM) -> bool:
    """Signal the process (and its process group), wait for it to exit, SIGKILL after `timeout`.

    Returns True when something was running."""
    pid = read_pid(pidfile)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return False
    _signal_group(pid, sig)
    deadline = time.monotonic() + timeout
    while is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if is_alive(pid):
        _signal_group(pid, signal.SIGKILL)
        while is_alive(pid):
            time.sleep(0.05)
    pidfile.unlink(missing_ok=True)
    return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        if pgid == pid:
            os.killpg(pgid, sig)
        else:
            os.kill(pid, sig)


def wait_until(
    ready: Callable[[], bool], *, what: str, timeout: float, log: Path | None = None, pid: int | None = None
) -> None:
    """Poll `ready` until it is true; fail fast, naming `what` and its log, if the process died."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if ready():
            return
        where = f"; its log: {log}" if log else ""
        if pid is not None and not is_alive(pid):
            raise StartupError(f"{what} exited during start-up{where}{_tail(log)}")
        if time.monotonic() > deadline:
            raise StartupError(f"{what} was not ready after {timeout:.0f}s{where}{_tail(log)}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def _tail(log: Path | None, lines: int = 12) -> str:
    if not log or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return "\n  last lines:\n    " + "\n    ".join(text) if text else ""
