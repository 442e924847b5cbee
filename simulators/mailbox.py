"""The local SMTP server: receives mail like a real one and keeps it, so tests and developers can
read what patients would get.

Like a real mailbox store, it keeps one copy per Message-ID (a message sent twice shows once; the
repeat is counted, and each message says how often it was received since the server started).
Mail is appended to a file, so it survives a restart of the server. On receipt only the
Message-ID is read; a message is parsed when someone asks for it (parsing with Python's email
package costs more than everything else the server does, and most mail is never read).

    python -m simulators.mailbox --smtp-port 2525 --port 7102 --store var/mailbox/messages.jsonl
    GET /messages?to=<address>     what an address received, oldest first
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
from collections import Counter
from email import message_from_bytes, policy
from email.parser import BytesHeaderParser
from pathlib import Path

from aiohttp import web
from aiosmtpd.controller import Controller

from simulators.common import health


def _readable(record: dict) -> dict:
    """A stored message as the reader shows it: subject and bodies decoded."""
    if "raw" not in record:
        return record
    parsed = message_from_bytes(base64.b64decode(record["raw"]), policy=policy.default)
    body = parsed.get_body(preferencelist=("plain", "html"))
    html = parsed.get_body(preferencelist=("html",))
    return {
        "message_id": record["message_id"],
        "from": record["from"],
        "to": record["to"],
        "subject": str(parsed["Subject"] or ""),
        "body": body.get_content() if body is not None else "",
        "html": html.get_content() if html is not None else "",
    }


class Mailbox:
    def __init__(self, store: Path) -> None:
        self.store = store
        self.messages: list[dict] = []
        self.repeats = 0
        if store.exists():
            self.messages = [json.loads(line) for line in store.read_text().splitlines() if line.strip()]
        self._ids = {m["message_id"] for m in self.messages}
        self.received = Counter(self._ids)  # sends per Message-ID (a test can see a repeat)

    async def handle_DATA(self, server, session, envelope) -> str:  # aiosmtpd handler hook
        raw = envelope.original_content or envelope.content
        headers = BytesHeaderParser(policy=policy.compat32).parsebytes(raw)
        message_id = (headers["Message-ID"] or "").strip()
        self.received[message_id] += 1
        if message_id and message_id in self._ids:
            self.repeats += 1
            return "250 OK (already delivered)"
        record = {
            "message_id": message_id,
            "from": envelope.mail_from,
            "to": [address.lower() for address in envelope.rcpt_tos],
            "raw": base64.b64encode(raw).decode(),
        }
        self.messages.append(record)
        self._ids.add(message_id)
        with self.store.open("a") as out:
            out.write(json.dumps(record) + "\n")
        return "250 OK"

    async def list_messages(self, request: web.Request) -> web.Response:
        to = request.query.get("to", "").lower()
        found = []
        for index, stored in enumerate(self.messages):
            if not to or to in stored["to"]:
                self.messages[index] = readable = _readable(stored)  # parsed once, when first read
                found.append(readable | {"received": self.received[readable["message_id"]]})
        return web.json_response({"messages": found, "repeats_dropped": self.repeats})


async def main(smtp_port: int, port: int, store: Path) -> None:
    store.parent.mkdir(parents=True, exist_ok=True)
    mailbox = Mailbox(store)
    controller = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    app = web.Application()
    app.add_routes([web.get("/messages", mailbox.list_messages), web.get("/healthz", health)])
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        controller.stop()
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="local SMTP server that keeps what it receives")
    parser.add_argument("--smtp-port", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.smtp_port, args.port, args.store))
