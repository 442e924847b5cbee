"""What every external-party simulator does: idempotency keys and injectable faults."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Faults:
    """How the next `times` requests misbehave: "timeout" (done, but answered after `delay`),
    "error" (503, nothing done), "busy" (429, nothing done), "slow" (answered after `delay`),
    "reject" (422, nothing done).
    With `match`, only requests whose body has those values count (e.g. one phone number)."""

    mode: str = "normal"
    times: int = 0
    delay: float = 0.0
    match: dict = field(default_factory=dict)

    def take(self, body: dict) -> tuple[str, float]:
        if self.times <= 0 or any(body.get(k) != v for k, v in self.match.items()):
            return "normal", 0.0
        self.times -= 1
        return self.mode, self.delay


def _fingerprint(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass
class IdempotentApi:
    """Runs an operation once per idempotency key and replays its reply for a retry."""

    faults: Faults = field(default_factory=Faults)
    replies: dict[str, tuple[str, int, dict]] = field(default_factory=dict)
    replays: Counter = field(default_factory=Counter)  # per key: retries answered, not done again
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def handle(
        self, request: web.Request, key_header: str, operate: Callable[[dict], tuple[int, dict]]
    ):
        key = request.headers.get(key_header, "")
        if not key:
            return web.json_response({"code": "idempotency_key_required"}, status=400)
        body = await request.json()
        mode, delay = self.faults.take(body)
        if mode == "error":
            return web.json_response({"code": "temporarily_unavailable"}, status=503)
        if mode == "busy":
            return web.json_response({"code": "rate_limited"}, status=429)
        if mode == "reject":
            return web.json_response({"code": "rejected"}, status=422)
        async with self.lock:
            known = self.replies.get(key)
            if known is not None and known[0] != _fingerprint(body):
                return web.json_response({"code": "idempotency_key_reused"}, status=409)
            if known is None:
                status, reply = operate(body)
                self.replies[key] = known = (_fingerprint(body), status, reply)
            else:
                self.replays[key] += 1
        if mode in ("timeout", "slow"):
            await asyncio.sleep(delay)  # a timeout: the work is done, the answer comes too late
        return web.json_response(known[2], status=known[1])

    async def set_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.faults = Faults(
            body.get("mode", "normal"),
            int(body.get("times", 1)),
            float(body.get("delay", 0)),
            dict(body.get("match", {})),
        )
        return web.json_response({"ok": True})


async def health(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def serve(routes: list[web.RouteDef], api: IdempotentApi, description: str) -> None:
    """Run a simulator on 127.0.0.1:--port with its routes plus /_faults and /healthz."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.add_routes([*routes, web.post("/_faults", api.set_faults), web.get("/healthz", health)])
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)
