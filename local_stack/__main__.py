"""Command line of the local stack (the ./mesh script calls this).

python -m local_stack up        start everything that is not running, wait until healthy
python -m local_stack down      stop everything (by PID), leaving data in place
python -m local_stack status    what runs, with PIDs
python -m local_stack logs      where each part logs
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from local_stack.processes import StartupError
from local_stack.stack import ROOT, Ports, Stack


def _print(part: str, message: str) -> None:
    print(f"  {part:<16} {message}", flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mesh", description="Run Clinic Mesh locally.")
    parser.add_argument("command", choices=["up", "down", "status", "logs"])
    args = parser.parse_args(argv)
    state_dir = Path(os.environ.get("CLINIC_STATE_DIR", ROOT / "var"))
    stack = Stack(state_dir, Ports.from_env(), report=_print)

    if args.command == "up":
        print(f"Starting Clinic Mesh (state in {state_dir})", flush=True)
        try:
            stack.up()
        except StartupError as exc:
            print(f"\n  FAILED: {exc}\n\nParts that started are still running; `./mesh down` stops them.")
            return 1
        print(f"\nClinic Mesh is up. REST edge: {stack.edge_url}  (try: curl -s {stack.edge_url}/healthz)")
        print("Logs: var/log/<part>.log   Stop: ./mesh down")
        return 0
    if args.command == "down":
        print("Stopping Clinic Mesh", flush=True)
        stack.down()
        print("Stopped; data is kept in", state_dir)
        return 0
    if args.command == "status":
        for part, pid in stack.status().items():
            _print(part, f"running (pid {pid})" if pid else "stopped")
        return 0
    for part in stack.status():
        _print(part, str(state_dir / "log" / f"{part}.log"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
