"""Billing through the Envoy edge: invoices follow appointments, admin adjustments, payments with
the provider simulator (declines, timeouts, retries), refunds, and who may do what."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from clinic.payment.v1 import events_pb2, resources_pb2
from tests.support.billing import invoice_of, money, provider, provider_token, set_fee
from tests.support.clinic import at, doctor_with_schedule, future_day
from tests.support.identity import Edge
from tests.support.kafka import read_topic
from tests.support.polling import until


@pytest.fixture(scope="module")
def clinic(mesh):
    edge = Edge(mesh)
    admin = edge.admin()
    set_fee(edge, admin, "CONSULT", 60)
    set_fee(edge, admin, "LONG", 95, 50)
    doctor = doctor_with_schedule(edge, admin)
    yield edge, admin, doctor
    edge.close()


_days = iter(range(20, 400))


def booked(edge, patient, doctor, visit: str = "CONSULT") -> str:
    """A new appointment of the patient (a new day each time, so never a conflict)."""
    body = {"doctorId": doctor.user_id, "startTime": at(future_day(next(_days)), "10:00"), "visitType": visit}
    reply = edge.http.post("/v1/appointments", json=body, headers=patient.auth)
    assert reply.status_code == 200, reply.text
    return reply.json()["appointment"]["id"]


def pay(
    edge,
    person,
    invoice_id: str,
    amount: dict,
    token: str,
    method: str = "PAYMENT_METHOD_CARD",
    request_id=None,
):
    body = {"invoiceId": invoice_id, "amount": amount, "method": method, "providerToken": token}
    return edge.http.post(
        "/v1/billing/payments",
        params={"request_id": request_id or str(uuid.uuid4())},
        json=body,
        headers=person.auth,
    )


def complete(edge, doctor, appointment_id: str) -> None:
    reply = edge.http.patch(
        f"/v1/appointments/{appointment_id}",
        params={"update_mask": "status"},
        json={"status": "APPOINTMENT_STATUS_COMPLETED"},
        headers=doctor.auth,
    )
    assert reply.status_code == 200, reply.text


def test_booking_makes_one_pending_invoice_and_cancelling_voids_it(clinic, mesh):
    edge, _, doctor = clinic
    patient = edge.register_patient()
    appointment_id = booked(edge, patient, doctor, "LONG")
    invoice = invoice_of(edge, patient, appointment_id, "PENDING")
    assert invoice["patientId"] == patient.user_id
    assert invoice["totalAmount"] == {"currencyCode": "EUR", "units": "95", "nanos": 500000000}
    assert invoice["balanceDue"] == invoice["totalAmount"]
    assert [line["visitType"] for line in invoice["lines"]] == ["LONG"]

    edge.http.delete(f"/v1/appointments/{appointment_id}", headers=patient.auth).raise_for_status()
    voided = invoice_of(edge, patient, appointment_id, "VOIDED")
    assert voided["id"] == invoice["id"]  # the same invoice, not a second one
    records = [
        r
        for r in read_topic(mesh.kafka_bootstrap, "clinic.payment.v1.events")
        if r.key == invoice["id"].encode()
    ]
    assert [r.headers["ce_type"] for r in records] == [
        b"clinic.payment.v1.InvoiceCreated",
        b"clinic.payment.v1.InvoiceStatusChanged",
    ]
    change = events_pb2.InvoiceStatusChanged.FromString(records[1].value)
    assert (change.old_status, change.new_status) == (
        resources_pb2.INVOICE_STATUS_PENDING,
        resources_pb2.INVOICE_STATUS_VOIDED,
    )


def test_completing_makes_the_invoice_due_and_the_patient_pays_it_by_card(clinic, mesh):
    edge, _, doctor = clinic
    patient = edge.register_patient()
    appointment_id = booked(edge, patient, doctor)
    complete(edge, doctor, appointment_id)
    invoice = invoice_of(edge, patient, appointment_id, "DUE")

    first = pay(edge, patient, invoice["id"], money(20), provider_token(mesh))
    assert first.status_code == 200, first.text
    assert first.json()["payment"]["status"] == "PAYMENT_STATUS_SUCCEEDED"
    partly = edge.http.get(f"/v1/billing/invoices/{invoice['id']}", headers=patient.auth).json()["invoice"]
    assert (partly["status"], partly["balanceDue"]["units"]) == ("INVOICE_STATUS_DUE", "40")
    too_much = pay(edge, patient, invoice["id"], money(50), provider_token(mesh))
    assert too_much.status_code == 400 and "more than the balance due" in too_much.json()["message"]
    rest = pay(edge, patient, invoice["id"], money(40), provider_token(mesh))
    assert rest.json()["payment"]["status"] == "PAYMENT_STATUS_SUCCEEDED"
    paid = edge.http.get(f"/v1/billing/invoices/{invoice['id']}", headers=patient.auth).json()["invoice"]
    assert paid["status"] == "INVOICE_STATUS_PAID"
    assert paid["paidAmount"]["units"] == "60" and "units" not in paid["balanceDue"]  # zero
    again = pay(edge, patient, invoice["id"], money(1), provider_token(mesh))
    assert again.status_code == 400 and "PAID" in again.json()["message"]


@pytest.mark.parametrize("method", ["PAYMENT_METHOD_PAYPAL", "PAYMENT_METHOD_APPLE_PAY"])
def test_paypal_and_apple_pay_go_through_their_own_adapters(clinic, mesh, method):
    edge, _, doctor = clinic
    patient = edge.register_patient()
    invoice = invoice_of(edge, patient, booked(edge, patient, doctor), "PENDING")  # paying ahead is allowed
    kind = {"PAYMENT_METHOD_PAYPAL": "paypal", "PAYMENT_METHOD_APPLE_PAY": "apple_pay"}[method]
    reply = pay(edge, patient, invoice["id"], money(60), provider_token(mesh, kind), method=method)
    assert reply.status_code == 200, reply.text
    assert reply.json()["payment"]["status"] == "PAYMENT_STATUS_SUCCEEDED"
    assert invoice_of(edge, patient, invoice["appointmentId"], "PAID")


def test_a_declined_card_is_a_failed_payment_not_an_error(clinic, mesh):
    edge, _, doctor = clinic
    patient = edge.register_patient()
    invoice = invoice_of(edge, patient, booked(edge, patient, doctor))
    reply = pay(edge, patient, invoice["id"], money(60), provider_token(mesh, card_number="4000000000000002"))
    assert reply.status_code == 200
    payment = reply.json()["payment"]
    assert (payment["status"], payment["failureCode"]) == ("PAYMENT_STATUS_FAILED", "card_declined")
    still = edge.http.get(f"/v1/billing/invoices/{invoice['id']}", headers=patient.auth).json()["invoice"]
    assert still["status"] == "INVOICE_STATUS_PENDING"
    assert "units" not in still.get("paidAmount", {})  # nothing was paid

    def failed_event():
        records = read_topic(mesh.kafka_bootstrap, "clinic.payment.v1.events")
        return [
            r
            for r in records
            if r.headers["ce_type"] == b"clinic.payment.v1.PaymentFailed"
            and events_pb2.PaymentFailed.FromString(r.value).payment_id == payment["id"]
        ]

    (record,) = until(failed_event, within=15, what="PaymentFailed")
    assert events_pb2.PaymentFailed.FromString(record.value).reason_code == "card_declined"


def test_a_slow_provider_within_the_timeout_is_just_slow(clinic, mesh):
    edge, _, doctor = clinic
    patient = edge.register_patient()
    invoice = invoice_of(edge, patient, booked(edge, patient, doctor))
    provider(mesh, "/_faults", {"mode": "slow", "times": 1, "delay": 0.7})  # under the 1.5 s timeout
    reply = pay(edge, patient, invoice["id"], money(60), provider_token(mesh))
    assert reply.status_code == 200
    assert reply.json()["payment"]["status"] == "PAYMENT_STATUS_SUCCEEDED"


@pytest.mark.parametrize("fault", ["timeout", "error", "busy"])
def test_a_provider_that_times_out_or_fails_charges_once_when_the_payment_is_retried(clinic, mesh, fault):
    edge, _, doctor = clinic
    patient = edge.register_patient()
    invoice = invoice_of(edge, patient, booked(edge, patient, doctor))
    token, request_id = provider_token(mesh), str(uuid.uuid4())
    provider(mesh, "/_faults", {"mode": fault, "times": 1, "delay": 4})  # the service waits 1.5 s at most

    first = pay(edge, patient, invoice["id"], money(60), token, request_id=request_id)
    assert first.status_code == 503, first.text
    assert "retry with the same request_id" in first.json()["message"]
    retry = pay(edge, patient, invoice["id"], money(60), token, request_id=request_id)
    assert retry.status_code == 200, retry.text
    assert retry.json()["payment"]["status"] == "PAYMENT_STATUS_SUCCEEDED"
    again = pay(edge, patient, invoice["id"], money(60), token, request_id=request_id)
    assert again.json()["payment"]["id"] == retry.json()["payment"]["id"]  # the same answer, no new charge

    reference = retry.json()["payment"]["providerReference"]
    charges = [c for c in provider(mesh, "/_ledger")["charges"] if c["id"] == reference]
    assert len(charges) == 1
    assert (
        len(
            [
                c
                for c in provider(mesh, "/_ledger")["charges"]
                if c["amount_minor"] == 6000 and c["id"] == reference
            ]
        )
        == 1
    )
    paid = edge.http.get(f"/v1/billing/invoices/{invoice['id']}", headers=patient.auth).json()["invoice"]
    assert (paid["status"], paid["paidAmount"]["units"]) == ("INVOICE_STATUS_PAID", "60")


def test_two_tries_of_one_payment_at_the_same_moment_get_the_same_payment_and_one_charge(clinic, mesh):
    edge, _, doctor = clinic
    patient = edge.register_patient()
    invoice = invoice_of(edge, patient, booked(edge, patient, doctor))
    token, request_id = provider_token(mesh), str(uuid.uuid4())
    provider(mesh, "/_faults", {"mode": "slow", "times": 1, "delay": 0.5})  # keep the first one in flight

    with ThreadPoolExecutor(max_workers=2) as pool:
        tries = list(
            pool.map(
                lambda _: pay(Edge(mesh), patient, invoice["id"], money(60), token, request_id=request_id),
                range(2),
            )
        )
    assert [t.status_code for t in tries] == [200, 200], [t.text for t in tries]
    assert len({t.json()["payment"]["id"] for t in tries}) == 1
    reference = (
        tries[0].json()["payment"]["providerReference"] or tries[1].json()["payment"]["providerReference"]
    )
    assert len([c for c in provider(mesh, "/_ledger")["charges"] if c["id"] == reference]) == 1
    paid = edge.http.get(f"/v1/billing/invoices/{invoice['id']}", headers=patient.auth).json()["invoice"]
    assert (paid["status"], paid["paidAmount"]["units"]) == ("INVOICE_STATUS_PAID", "60")


def test_a_payment_left_pending_by_a_timeout_is_settled_by_the_reconciler(clinic, mesh):
    edge, _, doctor = clinic
    patient = edge.register_patient()
    invoice = invoice_of(edge, patient, booked(edge, patient, doctor))
    provider(mesh, "/_faults", {"mode": "timeout", "times": 1, "delay": 4})
    assert pay(edge, patient, invoice["id"], money(60), provider_token(mesh)).status_code == 503
    # The client never comes back; the reconciler asks the provider with the same key.
    assert invoice_of(edge, patient, invoice["appointmentId"], "PAID")


def test_a_payment_that_settles_after_its_appointment_was_cancelled_is_refunded_in_full(clinic, mesh):
    edge, admin, doctor = clinic
    patient = edge.register_patient()
    appointment_id = booked(edge, patient, doctor)
    invoice = invoice_of(edge, patient, appointment_id)
    provider(mesh, "/_faults", {"mode": "error", "times": 1000})  # the provider is down for now
    try:
        paid = pay(edge, patient, invoice["id"], money(60), provider_token(mesh))
        assert paid.status_code == 503
        assert edge.http.delete(f"/v1/appointments/{appointment_id}", headers=patient.auth).status_code == 200
        invoice_of(edge, patient, appointment_id, "VOIDED")
    finally:
        provider(mesh, "/_faults", {"mode": "normal", "times": 0})  # back: the reconciler charges

    def refunded():
        reply = edge.http.get("/v1/billing/refunds", params={"invoice_id": invoice["id"]}, headers=admin.auth)
        found = reply.json().get("refunds", [])
        return found if found and found[0]["status"] == "REFUND_STATUS_SUCCEEDED" else None

    (refund,) = until(refunded, within=30, what="the automatic refund")
    assert refund["amount"] == {"currencyCode": "EUR", "units": "60"} and "voided" in refund["reason"]
    ledger = provider(mesh, "/_ledger")
    payment = edge.http.get("/v1/billing/payments", params={"invoice_id": invoice["id"]}, headers=admin.auth)
    (charged,) = payment.json()["payments"]
    assert charged["status"] == "PAYMENT_STATUS_SUCCEEDED"
    assert [r["amount_minor"] for r in ledger["refunds"] if r["charge"] == charged["providerReference"]] == [
        6000
    ]


def test_admin_adjusts_a_pending_invoice_with_a_reason_kept_in_its_history(clinic):
    edge, admin, doctor = clinic
    patient = edge.register_patient()
    appointment_id = booked(edge, patient, doctor)
    invoice = invoice_of(edge, patient, appointment_id, "PENDING")
    pending = edge.http.get(
        "/v1/billing/invoices",
        params={"status": "PENDING", "patient_id": patient.user_id},
        headers=admin.auth,
    ).json()
    assert [i["id"] for i in pending["invoices"]] == [invoice["id"]] and pending["totalSize"] == 1

    lines = {
        "lines": [
            {"description": "Consultation", "visitType": "CONSULT", "amount": money(60)},
            {"description": "Blood test", "amount": money(24, 90)},
        ]
    }
    path = f"/v1/billing/invoices/{invoice['id']}"
    no_reason = edge.http.patch(path, params={"update_mask": "lines"}, json=lines, headers=admin.auth)
    assert no_reason.status_code == 400
    assert no_reason.json()["details"][0]["fieldViolations"][0]["field"] == "reason"

    adjusted = edge.http.patch(
        path,
        params={"update_mask": "lines", "reason": "blood test added at the desk"},
        json=lines,
        headers=admin.auth,
    )
    assert adjusted.status_code == 200, adjusted.text
    assert adjusted.json()["invoice"]["totalAmount"] == {
        "currencyCode": "EUR",
        "units": "84",
        "nanos": 900000000,
    }
    history = edge.http.get(f"{path}/adjustments", headers=patient.auth).json()["adjustments"]
    assert len(history) == 1
    record = history[0]
    assert (record["adjustedBy"], record["reason"]) == (admin.user_id, "blood test added at the desk")
    assert (record["beforeTotal"]["units"], record["afterTotal"]["units"]) == ("60", "84")
    assert [line["description"] for line in record["beforeLines"]] == [invoice["lines"][0]["description"]]

    bad_currency = {"lines": [{"description": "x", "amount": {"currencyCode": "USD", "units": 1}}]}
    refused = edge.http.patch(
        path, params={"update_mask": "lines", "reason": "r"}, json=bad_currency, headers=admin.auth
    )
    assert refused.status_code == 400 and "EUR" in refused.json()["message"]
    edge.http.delete(f"/v1/appointments/{appointment_id}", headers=patient.auth).raise_for_status()
    invoice_of(edge, patient, appointment_id, "VOIDED")
    frozen = edge.http.patch(
        path, params={"update_mask": "lines", "reason": "too late"}, json=lines, headers=admin.auth
    )
    assert frozen.status_code == 400 and "VOIDED" in frozen.json()["message"]


def test_an_adjustment_cannot_go_below_a_payment_still_waiting_for_the_provider(clinic, mesh):
    edge, admin, doctor = clinic
    patient = edge.register_patient()
    invoice = invoice_of(edge, patient, booked(edge, patient, doctor))
    provider(mesh, "/_faults", {"mode": "error", "times": 1000})
    try:
        assert pay(edge, patient, invoice["id"], money(60), provider_token(mesh)).status_code == 503
        lower = {
            "lines": [{"description": "Short consultation", "visitType": "CONSULT", "amount": money(40)}]
        }
        refused = edge.http.patch(
            f"/v1/billing/invoices/{invoice['id']}",
            params={"update_mask": "lines", "reason": "shorter visit"},
            json=lower,
            headers=admin.auth,
        )
        assert refused.status_code == 400 and "already paid" in refused.json()["message"]
    finally:
        provider(mesh, "/_faults", {"mode": "normal", "times": 0})
    assert invoice_of(edge, patient, invoice["appointmentId"], "PAID")  # the reconciler settled it


def test_admin_refunds_part_then_the_rest_of_a_payment(clinic, mesh):
    edge, admin, doctor = clinic
    patient = edge.register_patient()
    invoice = invoice_of(edge, patient, booked(edge, patient, doctor))
    payment = pay(edge, patient, invoice["id"], money(60), provider_token(mesh)).json()["payment"]

    def refund(amount=None, request_id=None):
        body = {"paymentId": payment["id"], "reason": "visit shortened"} | (
            {"amount": amount} if amount else {}
        )
        return edge.http.post(
            "/v1/billing/refunds",
            params={"request_id": request_id or str(uuid.uuid4())},
            json=body,
            headers=admin.auth,
        )

    key = str(uuid.uuid4())
    part = refund(money(10), key)
    assert part.status_code == 200, part.text
    assert part.json()["refund"]["status"] == "REFUND_STATUS_SUCCEEDED"
    assert (
        refund(money(10), key).json()["refund"]["id"] == part.json()["refund"]["id"]
    )  # a retry: same refund
    other_amount = refund(money(20), key)
    assert other_amount.status_code == 400 and "request_id" in other_amount.json()["message"]
    assert refund(money(60)).status_code == 400  # only 50 are left
    rest = refund()  # no amount: whatever is left
    assert rest.json()["refund"]["amount"]["units"] == "50"
    assert (
        edge.http.get(f"/v1/billing/payments/{payment['id']}", headers=patient.auth).json()["payment"][
            "refundedAmount"
        ]["units"]
        == "60"
    )
    ledger = provider(mesh, "/_ledger")
    assert sorted(
        r["amount_minor"] for r in ledger["refunds"] if r["charge"] == payment["providerReference"]
    ) == [1000, 5000]
    events = read_topic(mesh.kafka_bootstrap, "clinic.payment.v1.events")
    issued = [
        events_pb2.RefundIssued.FromString(r.value)
        for r in events
        if r.headers["ce_type"].endswith(b"RefundIssued")
    ]
    assert sorted(e.amount.units for e in issued if e.payment_id == payment["id"]) == [10, 50]


def test_another_patient_cannot_read_pay_or_refund_and_only_admins_adjust_or_refund(clinic, mesh):
    edge, admin, doctor = clinic
    alice, bob = edge.register_patient(), edge.register_patient()
    invoice = invoice_of(edge, alice, booked(edge, alice, doctor))
    path = f"/v1/billing/invoices/{invoice['id']}"
    assert edge.http.get(path, headers=bob.auth).status_code == 404
    assert pay(edge, bob, invoice["id"], money(60), provider_token(mesh)).status_code == 404
    assert (
        edge.http.get(
            "/v1/billing/invoices", params={"patient_id": alice.user_id}, headers=bob.auth
        ).status_code
        == 403
    )
    assert [
        i["id"] for i in edge.http.get("/v1/billing/invoices", headers=bob.auth).json().get("invoices", [])
    ] == []

    payment = pay(edge, alice, invoice["id"], money(30), provider_token(mesh)).json()["payment"]
    for person in (alice, bob):
        refused = edge.http.post(
            "/v1/billing/refunds",
            params={"request_id": str(uuid.uuid4())},
            json={"paymentId": payment["id"], "reason": "please"},
            headers=person.auth,
        )
        assert refused.status_code == 403
    receptionist = edge.create_staff(admin, "RECEPTIONIST")
    lines = {"lines": [{"description": "x", "amount": money(1)}]}
    refused = edge.http.patch(
        path, params={"update_mask": "lines", "reason": "r"}, json=lines, headers=receptionist.auth
    )
    assert refused.status_code == 403
    doctor_view = edge.http.get(path, headers=doctor.auth)
    assert doctor_view.status_code == 403
    assert until(
        lambda: edge.http.get(path, headers=receptionist.auth).status_code == 200, within=5, what="desk view"
    )
