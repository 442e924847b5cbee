"""Sending one delivery by email (SMTP), SMS or push (provider API).

Every message carries an identity derived from its delivery id: the email's Message-ID, the
provider's idempotency key. A delivery sent again after a crash is recognised as the same
message by the mailbox or the provider, so a person never gets it twice.

A channel's own timeout bounds each network step; the notifier bounds a whole send
(`send_timeout_seconds`), which the claim's lease is derived from.
"""

from __future__ import annotations

from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate

import aiosmtplib
import httpx

# A failure's reason is stored, published, logged and shown to staff (GetNotification): it says
# what happened in words, never an exception class, a server's text or an address.


class TemporaryFailure(Exception):
    """Worth trying again later (server down, timeout, 5xx)."""


class PermanentFailure(Exception):
    """Will never work as it is (no such number, refused by the provider)."""


class Email:
    """SMTP, keeping up to `connections` sessions open between messages: a new session per message
    (connect, EHLO, QUIT) costs both sides more than the message itself."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        start_tls: bool,
        username: str,
        password: str,
        sender: str,
        timeout: float,
        connections: int = 8,
    ) -> None:
        self.host, self.port, self.start_tls = host, port, start_tls
        self.username, self.password = username or None, password or None
        self.sender = sender
        self.timeout = timeout
        self.connections = connections
        self._idle: list[aiosmtplib.SMTP] = []

    def message(self, delivery) -> MIMEMultipart:
        # The legacy (compat32) classes: EmailMessage's header parsing and folding cost ~4x the
        # CPU (python -m bench.email), more than sending the message.
        message = MIMEMultipart("alternative")
        message["Message-ID"] = f"<{delivery.id}@clinic-mesh>"
        message["From"] = self.sender
        message["To"] = delivery.address
        message["Subject"] = Header(delivery.subject, "utf-8")
        message["Date"] = formatdate(localtime=False)
        message.attach(MIMEText(delivery.body, "plain", "utf-8"))
        message.attach(MIMEText(delivery.html, "html", "utf-8"))
        return message

    async def send(self, delivery) -> None:
        message = self.message(delivery)
        client, reusable = None, False
        try:
            client, kept = await self._session()
            try:
                await client.send_message(message)
            except (aiosmtplib.SMTPServerDisconnected, ConnectionError):
                if not kept:
                    raise
                client.close()  # the server closed a kept session meanwhile: once more, anew
                client, _ = await self._session(kept=False)
                await client.send_message(message)
            reusable = True
        except aiosmtplib.SMTPRecipientsRefused as exc:
            # The reason is stored, published and logged: the server's codes, never the address.
            codes = ", ".join(str(r.code) for r in exc.recipients)
            raise PermanentFailure(f"SMTP: the mail server refused the address ({codes})") from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise TemporaryFailure(f"SMTP: the mail server answered {exc.code}") from exc
        except (aiosmtplib.SMTPTimeoutError, TimeoutError) as exc:
            raise TemporaryFailure("SMTP: the mail server did not answer in time") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TemporaryFailure("SMTP: the mail server could not be reached") from exc
        finally:  # a session that failed, or was cut off by the send timeout, is not used again
            if client is not None:
                if reusable and len(self._idle) < self.connections:
                    self._idle.append(client)
                else:
                    client.close()

    async def _session(self, *, kept: bool = True) -> tuple[aiosmtplib.SMTP, bool]:
        """A connected session, and whether it is one kept from an earlier message."""
        while kept and self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client, True
            client.close()
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            start_tls=self.start_tls,
            username=self.username,
            password=self.password,
            timeout=self.timeout,
        )
        await client.connect()
        return client, False

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


class ProviderChannel:
    """SMS or push through the messaging provider's HTTP API."""

    def __init__(self, http: httpx.AsyncClient, path: str, body) -> None:
        self.http = http
        self.path = path
        self.body = body  # delivery -> request body

    async def send(self, delivery) -> None:
        try:
            reply = await self.http.post(
                self.path, json=self.body(delivery), headers={"Idempotency-Key": str(delivery.id)}
            )
        except httpx.TimeoutException as exc:
            raise TemporaryFailure(f"{self.path}: the provider did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise TemporaryFailure(f"{self.path}: the provider could not be reached") from exc
        if reply.status_code >= 500 or reply.status_code == 429:
            raise TemporaryFailure(f"{self.path}: provider answered {reply.status_code}")
        if reply.status_code >= 400:
            # Not the provider's text: it may quote the number or the message.
            raise PermanentFailure(f"{self.path}: refused ({reply.status_code})")


def provider_channels(base_url: str, timeout: float) -> tuple[httpx.AsyncClient, dict[str, ProviderChannel]]:
    http = httpx.AsyncClient(base_url=base_url, timeout=timeout)
    sms = ProviderChannel(http, "/v1/sms", lambda d: {"to": d.address, "text": d.body})
    push = ProviderChannel(
        http, "/v1/push", lambda d: {"user_id": d.address, "title": d.subject, "body": d.body}
    )
    return http, {"SMS": sms, "PUSH": push}
