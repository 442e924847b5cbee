"""Provider adapters: card, PayPal and Apple Pay behind one small interface.

Each call carries our idempotency key (the client's request_id), so a retry after a timeout
reaches the provider as the same request and can never charge twice. An answer that says no
(declined) is a result; no answer (timeout, 5xx, 409, 429, connection refused) is
ProviderUnavailable, and the payment stays PENDING until a retry or the reconciler asks again with
the same key.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import httpx

from clinic_platform.money import Amount, exponent


@dataclass(frozen=True)
class Outcome:
    succeeded: bool
    reference: str = ""  # the provider's id of the charge or refund
    failure_code: str = ""


class ProviderUnavailable(Exception):
    """The provider did not answer (in time): the outcome is unknown, retry with the same key."""


def _value(amount: Amount) -> str:
    return str(Decimal(amount.minor).scaleb(-exponent(amount.currency)))


class Adapter:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def _post(self, path: str, body: dict, headers: dict[str, str]) -> httpx.Response:
        try:
            reply = await self.http.post(path, json=body, headers=headers)
        except httpx.HTTPError as exc:  # timeouts and refused connections alike
            raise ProviderUnavailable(f"{type(exc).__name__}: {exc}") from exc
        # 409 (this key's request is still in progress) and 429 (slow down) say nothing about
        # the outcome: like a 5xx, ask again later with the same key.
        if reply.status_code >= 500 or reply.status_code in (409, 429):
            raise ProviderUnavailable(f"provider answered {reply.status_code}")
        return reply

    async def charge(self, token: str, amount: Amount, key: str) -> Outcome:
        raise NotImplementedError

    async def refund(self, reference: str, amount: Amount, key: str) -> Outcome:
        raise NotImplementedError


class CardAdapter(Adapter):
    async def charge(self, token: str, amount: Amount, key: str) -> Outcome:
        reply = await self._post(
            "/v1/card/charges",
            {"token": token, "amount": amount.minor, "currency": amount.currency},
            {"Idempotency-Key": key},
        )
        body = reply.json()
        if reply.status_code == 200:
            return Outcome(True, body["id"])
        return Outcome(False, failure_code=body.get("error", {}).get("code", f"http_{reply.status_code}"))

    async def refund(self, reference: str, amount: Amount, key: str) -> Outcome:
        reply = await self._post(
            "/v1/card/refunds", {"charge": reference, "amount": amount.minor}, {"Idempotency-Key": key}
        )
        body = reply.json()
        if reply.status_code == 200:
            return Outcome(True, body["id"])
        return Outcome(False, failure_code=body.get("error", {}).get("code", f"http_{reply.status_code}"))


class PayPalAdapter(Adapter):
    async def charge(self, token: str, amount: Amount, key: str) -> Outcome:
        body = {
            "payment_source_token": token,
            "amount": {"value": _value(amount), "currency_code": amount.currency},
        }
        reply = await self._post("/v1/paypal/orders", body, {"PayPal-Request-Id": key})
        data = reply.json()
        if reply.status_code == 201 and data.get("status") == "COMPLETED":
            return Outcome(True, data["id"])
        issue = (data.get("details") or [{}])[0].get("issue", data.get("name", "declined"))
        return Outcome(False, failure_code=issue.lower())

    async def refund(self, reference: str, amount: Amount, key: str) -> Outcome:
        body = {"amount": {"value": _value(amount), "currency_code": amount.currency}}
        reply = await self._post(f"/v1/paypal/captures/{reference}/refund", body, {"PayPal-Request-Id": key})
        data = reply.json()
        if reply.status_code == 201 and data.get("status") == "COMPLETED":
            return Outcome(True, data["id"])
        issue = (data.get("details") or [{}])[0].get("issue", data.get("name", "declined"))
        return Outcome(False, failure_code=issue.lower())


class ApplePayAdapter(Adapter):
    async def charge(self, token: str, amount: Amount, key: str) -> Outcome:
        body = {"payment_token": token, "amount_minor": amount.minor, "currency": amount.currency}
        data = (await self._post("/v1/applepay/payments", body, {"Idempotency-Key": key})).json()
        if data.get("result") == "approved":
            return Outcome(True, data["transaction_id"])
        return Outcome(False, failure_code=data.get("reason", "declined"))

    async def refund(self, reference: str, amount: Amount, key: str) -> Outcome:
        body = {"transaction_id": reference, "amount_minor": amount.minor}
        data = (await self._post("/v1/applepay/refunds", body, {"Idempotency-Key": key})).json()
        if data.get("result") == "approved":
            return Outcome(True, data["refund_id"])
        return Outcome(False, failure_code=data.get("reason", "declined"))


def adapters(base_url: str, timeout_seconds: float) -> tuple[httpx.AsyncClient, dict[str, Adapter]]:
    http = httpx.AsyncClient(base_url=base_url, timeout=timeout_seconds)
    return http, {
        "CARD": CardAdapter(http),
        "PAYPAL": PayPalAdapter(http),
        "APPLE_PAY": ApplePayAdapter(http),
    }
