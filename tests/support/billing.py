"""Billing from a test: fees, provider tokens (as a patient's browser gets them), invoices."""

from __future__ import annotations

import httpx

from tests.support.identity import Edge, Person
from tests.support.polling import until


def set_fee(edge: Edge, admin: Person, visit_type: str, euros: int, cents: int = 0) -> None:
    reply = edge.http.patch(
        f"/v1/billing/fees/{visit_type}",
        params={"update_mask": "price", "allow_missing": "true"},
        json={"price": {"currencyCode": "EUR", "units": euros, "nanos": cents * 10_000_000}},
        headers=admin.auth,
    )
    assert reply.status_code == 200, reply.text


def provider_token(stack, method: str = "card", card_number: str = "4242424242424242") -> str:
    """What the provider's own page gives the patient; card data never reaches Clinic Mesh."""
    body = {"method": method, "card_number": card_number, "exp": "12/30", "cvc": "123"}
    reply = httpx.post(f"http://127.0.0.1:{stack.ports.payments}/v1/tokens", json=body, timeout=10)
    reply.raise_for_status()
    return reply.json()["token"]


def provider(stack, path: str, body: dict | None = None) -> dict:
    url = f"http://127.0.0.1:{stack.ports.payments}{path}"
    reply = httpx.post(url, json=body, timeout=10) if body is not None else httpx.get(url, timeout=10)
    reply.raise_for_status()
    return reply.json()


def invoice_of(edge: Edge, person: Person, appointment_id: str, status: str | None = None) -> dict:
    """The appointment's invoice once it exists (and has `status`): invoices follow events."""

    def found():
        reply = edge.http.get(
            "/v1/billing/invoices", params={"appointment_id": appointment_id}, headers=person.auth
        )
        invoices = reply.json().get("invoices", [])
        if len(invoices) == 1 and (status is None or invoices[0]["status"] == f"INVOICE_STATUS_{status}"):
            return invoices[0]
        return None

    return until(found, within=20, what=f"the invoice of appointment {appointment_id} ({status or 'any'})")


def money(euros: int, cents: int = 0) -> dict:
    return {"currencyCode": "EUR", "units": euros, "nanos": cents * 10_000_000}
