"""CPU to build one confirmation email, as notification sends it (compat32 classes) and with the
standard EmailMessage API, side by side in one run.

    .venv/bin/python -m bench.email [--messages 2000]"""

from __future__ import annotations

import argparse
import time
import uuid
from email.message import EmailMessage
from email.utils import formatdate
from types import SimpleNamespace

from aiosmtplib.email import flatten_message

from bench.common import emit
from notification.channels import Email

BODY = "Dear Paula Novak,\n\nyour appointment on Monday, 07 December 2026 at 10:00 is confirmed.\n"


def email_message(delivery) -> EmailMessage:
    message = EmailMessage()
    message["Message-ID"] = f"<{delivery.id}@clinic-mesh>"
    message["From"] = "Clinic Mesh <no-reply@clinic.example>"
    message["To"] = delivery.address
    message["Subject"] = delivery.subject
    message["Date"] = formatdate(localtime=False)
    message.set_content(delivery.body)
    message.add_alternative(delivery.html, subtype="html")
    return message


def per_message_ms(build, n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        delivery = SimpleNamespace(
            id=uuid.uuid4(),
            address="paula@example.org",
            subject="Your appointment is confirmed",
            body=BODY,
            html=f"<p>{BODY}</p>",
        )
        flatten_message(build(delivery))  # what aiosmtplib does before sending
    return (time.process_time() - started) * 1000 / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    n = parser.parse_args().messages
    email = Email(
        host="",
        port=0,
        start_tls=False,
        username="",
        password="",
        sender="Clinic Mesh <no-reply@clinic.example>",
        timeout=1,
    )
    compat32, standard = per_message_ms(email.message, n), per_message_ms(email_message, n)
    emit(
        {
            "benchmark": "email_build",
            "messages": n,
            "compat32_ms": round(compat32, 3),
            "email_message_ms": round(standard, 3),
            "ratio": round(standard / compat32, 1),
        }
    )


if __name__ == "__main__":
    main()
