"""A payment provider simulator: a real HTTP server with three provider-shaped APIs.

Card data never reaches Clinic Mesh: a client exchanges it here for a token (as with a real
provider's JS or SDK) and gives Clinic Mesh only the token.

    POST /v1/tokens                      {"method": "card", "card_number": ...} -> {"token": ...}
    POST /v1/card/charges                Stripe-like; Idempotency-Key header
    POST /v1/card/refunds
    POST /v1/paypal/orders               PayPal-like; PayPal-Request-Id header
    POST /v1/paypal/captures/{id}/refund
    POST /v1/applepay/payments           Apple Pay processor-like; Idempotency-Key header
    POST /v1/applepay/refunds

Magic cards: 4000000000000002 is declined, 4000000000009995 has insufficient funds; any other
number succeeds. Tests inject faults for the next N requests with POST /_faults
{"mode": "timeout"|"error"|"slow", "times": N, "delay": seconds}: a timeout still performs the
charge and answers too late (the response is lost, the money moved); an error answers 503
without doing anything; slow answers after the delay. GET /_ledger shows what happened.

    python -m simulators.payments --port 7101
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal

from aiohttp import web

from simulators.common import IdempotentApi, serve

DECLINED = {"4000000000000002": "card_declined", "4000000000009995": "insufficient_funds"}


@dataclass
class Provider:
    tokens: dict[str, dict] = field(default_factory=dict)  # token -> {"method", "decline"}
    charges: dict[str, dict] = field(default_factory=dict)  # id -> charge
    refunds: dict[str, dict] = field(default_factory=dict)

    def charge(self, method: str, token: str, minor: int, currency: str) -> tuple[int, dict]:
        card = self.tokens.get(token)
        if card is None or card["method"] != method:
            return 400, {"code": "invalid_token"}
        if card["decline"]:
            return 402, {"code": card["decline"]}
        charge_id = f"{method[:2]}_{uuid.uuid4().hex[:20]}"
        charge = {"id": charge_id, "method": method, "amount_minor": minor, "currency": currency}
        self.charges[charge_id] = charge | {"refunded_minor": 0}
        return 200, {"id": charge_id}

    def refund(self, charge_id: str, minor: int) -> tuple[int, dict]:
        charge = self.charges.get(charge_id)
        if charge is None:
            return 404, {"code": "no_such_charge"}
        if charge["refunded_minor"] + minor > charge["amount_minor"]:
            return 400, {"code": "amount_too_large"}
        charge["refunded_minor"] += minor
        refund_id = f"re_{uuid.uuid4().hex[:20]}"
        self.refunds[refund_id] = {"id": refund_id, "charge": charge_id, "amount_minor": minor}
        return 200, {"id": refund_id}


def _minor(decimal_value: str) -> int:
    return int(Decimal(decimal_value).scaleb(2))


class Simulator:
    """The HTTP face of the provider: each handler maps its API's shape onto Provider."""

    def __init__(self) -> None:
        self.provider = Provider()
        self.api = IdempotentApi()
        self.idempotent = self.api.handle

    async def tokens(self, request: web.Request) -> web.Response:
        body = await request.json()
        method = body.get("method", "")
        if method not in ("card", "paypal", "apple_pay"):
            return web.json_response({"code": "unknown_method"}, status=400)
        token = f"tok_{method}_{uuid.uuid4().hex}"
        self.provider.tokens[token] = {"method": method, "decline": DECLINED.get(body.get("card_number", ""))}
        return web.json_response({"token": token})

    async def card_charge(self, request: web.Request) -> web.Response:
        def operate(body: dict):
            status, reply = self.provider.charge(
                "card", body.get("token", ""), int(body["amount"]), body["currency"]
            )
            return status, ({"id": reply["id"], "status": "succeeded"} if status == 200 else {"error": reply})

        return await self.idempotent(request, "Idempotency-Key", operate)

    async def card_refund(self, request: web.Request) -> web.Response:
        def operate(body: dict):
            status, reply = self.provider.refund(body.get("charge", ""), int(body["amount"]))
            return status, ({"id": reply["id"], "status": "succeeded"} if status == 200 else {"error": reply})

        return await self.idempotent(request, "Idempotency-Key", operate)

    @staticmethod
    def _paypal(status: int, reply: dict) -> tuple[int, dict]:
        if status == 200:
            return 201, {"id": reply["id"], "status": "COMPLETED"}
        return 422, {"name": "UNPROCESSABLE_ENTITY", "details": [{"issue": reply["code"].upper()}]}

    async def paypal_order(self, request: web.Request) -> web.Response:
        def operate(body: dict):
            amount = body["amount"]
            token = body.get("payment_source_token", "")
            return self._paypal(
                *self.provider.charge("paypal", token, _minor(amount["value"]), amount["currency_code"])
            )

        return await self.idempotent(request, "PayPal-Request-Id", operate)

    async def paypal_refund(self, request: web.Request) -> web.Response:
        capture = request.match_info["capture_id"]

        def operate(body: dict):
            return self._paypal(*self.provider.refund(capture, _minor(body["amount"]["value"])))

        return await self.idempotent(request, "PayPal-Request-Id", operate)

    async def applepay_payment(self, request: web.Request) -> web.Response:
        def operate(body: dict):
            token, minor = body.get("payment_token", ""), int(body["amount_minor"])
            status, reply = self.provider.charge("apple_pay", token, minor, body["currency"])
            if status == 200:
                return 200, {"transaction_id": reply["id"], "result": "approved"}
            return 200, {"result": "declined", "reason": reply["code"]}

        return await self.idempotent(request, "Idempotency-Key", operate)

    async def applepay_refund(self, request: web.Request) -> web.Response:
        def operate(body: dict):
            status, reply = self.provider.refund(body.get("transaction_id", ""), int(body["amount_minor"]))
            if status == 200:
                return 200, {"refund_id": reply["id"], "result": "approved"}
            return 200, {"result": "declined", "reason": reply["code"]}

        return await self.idempotent(request, "Idempotency-Key", operate)

    async def ledger(self, _request: web.Request) -> web.Response:
        provider = self.provider
        return web.json_response(
            {"charges": list(provider.charges.values()), "refunds": list(provider.refunds.values())}
        )


def routes(simulator: Simulator) -> list[web.RouteDef]:
    return [
        web.post("/v1/tokens", simulator.tokens),
        web.post("/v1/card/charges", simulator.card_charge),
        web.post("/v1/card/refunds", simulator.card_refund),
        web.post("/v1/paypal/orders", simulator.paypal_order),
        web.post("/v1/paypal/captures/{capture_id}/refund", simulator.paypal_refund),
        web.post("/v1/applepay/payments", simulator.applepay_payment),
        web.post("/v1/applepay/refunds", simulator.applepay_refund),
        web.get("/_ledger", simulator.ledger),
    ]


if __name__ == "__main__":
    payments = Simulator()
    serve(routes(payments), payments.api, "payment provider simulator")
