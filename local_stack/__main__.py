"""Command line of the local stack (the ./mesh script calls this).

python -m local_stack up        start everything that is not running, wait until healthy
python -m local_stack down      stop everything (by PID), leaving data in place
python -m local_stack status    what runs, with PIDs
python -m local_stack logs      where each part logs
python -m local_stack demo      create demo users for every role (the stack must be up)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from local_stack.processes import StartupError
from local_stack.stack import ROOT, Ports, Stack


def _print(part: str, message: str) -> None:
    print(f"  {part:<18} {message}", flush=True)


def up(stack: Stack) -> int:
    print(f"Starting Clinic Mesh (state in {stack.state_dir})", flush=True)
    try:
        stack.up()
    except StartupError as exc:
        print(f"\n  FAILED: {exc}\n\nParts that started are still running; `./mesh down` stops them.")
        return 1
    print(f"\nClinic Mesh is up. REST edge: {stack.edge_url}  (try: curl -s {stack.edge_url}/healthz)")
    print("Demo users: ./mesh demo   Logs: var/log/<part>.log   Stop: ./mesh down")
    return 0


def down(stack: Stack) -> int:
    print("Stopping Clinic Mesh", flush=True)
    stack.down()
    print("Stopped; data is kept in", stack.state_dir)
    return 0


def status(stack: Stack) -> int:
    for part, pid in stack.status().items():
        _print(part, f"running (pid {pid})" if pid else "stopped")
    return 0


def logs(stack: Stack) -> int:
    for part in stack.status():
        _print(part, str(stack.state_dir / "log" / f"{part}.log"))
    return 0


def demo(stack: Stack) -> int:
    from local_stack.demo import create_demo_data

    print("Creating demo data through the REST edge", flush=True)
    try:
        create_demo_data(stack, _print)
    except Exception as exc:  # connection refused, an error answer: say it plainly
        print(f"\n  FAILED: {exc}\n\nIs the stack up? Start it with ./mesh up first.")
        return 1
    secrets = stack.state_dir / "secrets"
    print(f"\nPasswords: {secrets / 'demo-users.json'}")
    print(f"First admin (admin@clinic.example): {secrets / 'identity.json'}")
    return 0


COMMANDS = {"up": up, "down": down, "status": status, "logs": logs, "demo": demo}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mesh", description="Run Clinic Mesh locally.")
    parser.add_argument("command", choices=list(COMMANDS))
    args = parser.parse_args(argv)
    state_dir = Path(os.environ.get("CLINIC_STATE_DIR", ROOT / "var"))
    return COMMANDS[args.command](Stack(state_dir, Ports.from_env(), report=_print))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
