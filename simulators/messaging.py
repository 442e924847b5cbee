"""An SMS and push provider simulator: a real HTTP server with idempotency keys and faults.

POST /v1/sms    {"to": "+49...", "text": ...}        Idempotency-Key header -> {"id": ...}
POST /v1/push   {"user_id": ..., "title", "body"}    Idempotency-Key header -> {"id": ...}
POST /_faults   {"mode": "timeout"|"error"|"slow"|"reject", "times": N, "delay": s, "match": {"to": ...}}
GET  /messages?to=<phone or user id>                 what was delivered; "requests" counts the
                                                     times each was asked for (repeats replayed)

python -m simulators.messaging --port 7103
"""

from __future__ import annotations

import re
import uuid

from aiohttp import web

from simulators.common import IdempotentApi, serve

E164 = re.compile(r"^\+[1-9]\d{6,14}$")


class Messaging:
    def __init__(self) -> None:
        self.api = IdempotentApi()
        self.delivered: list[dict] = []

    def _deliver(self, request: web.Request, kind: str, to: str, body: dict) -> tuple[int, dict]:
        message_id = f"{kind}_{uuid.uuid4().hex[:16]}"
        key = request.headers["Idempotency-Key"]
        self.delivered.append({"id": message_id, "kind": kind, "to": to, "key": key, **body})
        return 200, {"id": message_id, "status": "delivered"}

    async def sms(self, request: web.Request) -> web.Response:
        def operate(body: dict):
            if not E164.match(body.get("to", "")):
                return 400, {"code": "invalid_number"}
            return self._deliver(request, "sms", body["to"], {"text": body.get("text", "")})

        return await self.api.handle(request, "Idempotency-Key", operate)

    async def push(self, request: web.Request) -> web.Response:
        def operate(body: dict):
            return self._deliver(
                request,
                "push",
                body.get("user_id", ""),
                {"title": body.get("title", ""), "body": body.get("body", "")},
            )

        return await self.api.handle(request, "Idempotency-Key", operate)

    async def messages(self, request: web.Request) -> web.Response:
        to = request.query.get("to", "")
        found = [
            m | {"requests": 1 + self.api.replays[m["key"]]}
            for m in self.delivered
            if not to or m["to"] == to
        ]
        return web.json_response({"messages": found})


if __name__ == "__main__":
    messaging = Messaging()
    routes = [
        web.post("/v1/sms", messaging.sms),
        web.post("/v1/push", messaging.push),
        web.get("/messages", messaging.messages),
    ]
    serve(routes, messaging.api, "SMS and push provider simulator")
