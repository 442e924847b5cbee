"""Rules of notifications: which kind of message each event is, which channels a person gets,
who sees which messages, how often to retry, how long a claim lasts, and the templates. No gRPC
and no SQL here."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

from clinic_platform.errors import InvalidArgument, PermissionDenied

EMAIL, SMS, PUSH = "EMAIL", "SMS", "PUSH"

# The event types a person is told about, and the preference kind (user_management's
# MessageKind) that decides their channels.
KIND_OF_EVENT = {
    "APPOINTMENT_BOOKED": "APPOINTMENT_CONFIRMATION",
    "APPOINTMENT_RESCHEDULED": "APPOINTMENT_CONFIRMATION",
    "APPOINTMENT_CANCELLED": "APPOINTMENT_CANCELLATION",
    "APPOINTMENT_COMPLETED": "VISIT_SUMMARY",
    "APPOINTMENT_REMINDER": "APPOINTMENT_REMINDER",
    "INVOICE_DUE": "BILLING",
    "INVOICE_PAID": "BILLING",
    "REFUND_ISSUED": "BILLING",
    "CLAIM_ADJUDICATED": "CLAIM_DECISION",
    "RECORD_ACCESS_REQUESTED": "RECORD_ACCESS",
    "EMERGENCY_ACCESS_USED": "RECORD_ACCESS",
}
ALWAYS_EMAILED = {"EMERGENCY_ACCESS_USED"}  # the patient (and admins) must learn of break-the-glass


def whose_record(recipient_id: str, patient_id: str) -> str:
    """How a message about access to a chart names it: to its patient "your medical record";
    to anyone else (an admin reviewing emergency access) without naming the patient."""
    return "your medical record" if recipient_id == patient_id else "a patient's medical record"


def channels_for(event_type: str, preferences: dict, *, has_phone: bool) -> list[str]:
    """The person's channels for this message: their choice per kind (default EMAIL, plus SMS
    with a phone number on file), minus channels they opted out of entirely."""
    kind = KIND_OF_EVENT[event_type]
    chosen = preferences.get("messages", {}).get(kind, [EMAIL, SMS] if has_phone else [EMAIL])
    opted_out = set(preferences.get("opted_out_channels", []))
    channels = [c for c in chosen if c not in opted_out and (c != SMS or has_phone)]
    if event_type in ALWAYS_EMAILED and EMAIL not in channels:
        channels.insert(0, EMAIL)
    return channels


@dataclass(frozen=True)
class NotifierSettings:
    clinic_name: str
    zone: str
    reminder_lead: timedelta
    max_attempts: int = 8
    retry_base_seconds: float = 2.0
    poll_seconds: float = 0.5
    batch_size: int = 50
    concurrency: int = 16
    # The most one send may take on any channel; a slower one is cut off as a temporary failure.
    send_timeout_seconds: float = 10.0
    # On top of the sends: time to record their results.
    lease_margin_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.concurrency < 1 or self.send_timeout_seconds <= 0:
            raise ValueError("batch_size, concurrency and send_timeout_seconds must be positive")

    @property
    def lease_seconds(self) -> float:
        """How long a claim lasts: a batch whose every send takes the full timeout, `concurrency`
        at a time, still ends inside it (50 / 16 at 10 s: 4 rounds, 45 s with the margin)."""
        rounds = math.ceil(self.batch_size / self.concurrency)
        return rounds * self.send_timeout_seconds + self.lease_margin_seconds


def listed_recipient(requested: str, caller_id: str, *, admin: bool) -> str:
    """Whose notifications a list shows: an admin's choice (empty: everyone's), else the caller's."""
    if admin:
        return requested
    if requested and requested != caller_id:
        raise PermissionDenied("only admins list other people's notifications")
    return caller_id


def may_read_notification(recipient_id: str, caller_id: str, *, admin: bool) -> bool:
    return recipient_id == caller_id or admin


def listed_patient(requested: str | None, caller_id: str, *, patient: bool) -> str | None:
    """Whose reminders a list shows: a patient's own; staff choose (None: everyone's)."""
    if not patient:
        return requested
    if requested and requested != caller_id:
        raise PermissionDenied("a patient sees only their own reminders")
    return caller_id


def retry_delay(attempts: int, base_seconds: float) -> timedelta:
    """Exponential backoff after `attempts` failed sends, capped at 5 minutes."""
    return timedelta(seconds=min(base_seconds * 2 ** (attempts - 1), 300.0))


def local_time(moment: datetime, zone: ZoneInfo) -> str:
    local = moment.astimezone(zone)
    return f"{local:%A, %d %B %Y at %H:%M} ({zone.key})"


# -- templates --------------------------------------------------------------------------------------
DEFAULTS: dict[str, tuple[str, str, str]] = {
    # event type: (email subject, email body, short text for SMS and push)
    "APPOINTMENT_BOOKED": (
        "Your appointment on {{ when }} is confirmed",
        "Dear {{ name }},\n\nyour appointment with {{ doctor }} on {{ when }} is confirmed.\n\n{{ clinic }}",
        "{{ clinic }}: your appointment with {{ doctor }} on {{ when }} is confirmed.",
    ),
    "APPOINTMENT_RESCHEDULED": (
        "Your appointment was moved to {{ when }}",
        "Dear {{ name }},\n\nyour appointment with {{ doctor }} was moved from {{ previous_when }}"
        " to {{ when }}.\n\n{{ clinic }}",
        "{{ clinic }}: your appointment with {{ doctor }} was moved to {{ when }}.",
    ),
    "APPOINTMENT_CANCELLED": (
        "Your appointment on {{ when }} is cancelled",
        "Dear {{ name }},\n\nyour appointment with {{ doctor }} on {{ when }} is cancelled.\n\n{{ clinic }}",
        "{{ clinic }}: your appointment on {{ when }} is cancelled.",
    ),
    "APPOINTMENT_COMPLETED": (
        "Your visit summary is ready",
        "Dear {{ name }},\n\nthank you for your visit on {{ when }}."
        " Your visit summary is ready: sign in to read it.\n\n{{ clinic }}",
        "{{ clinic }}: your visit summary is ready. Sign in to read it.",
    ),
    "APPOINTMENT_REMINDER": (
        "Reminder: your appointment on {{ when }}",
        "Dear {{ name }},\n\na reminder of your appointment with {{ doctor }} on {{ when }}.\n\n{{ clinic }}",
        "{{ clinic }}: reminder of your appointment with {{ doctor }} on {{ when }}.",
    ),
    "INVOICE_DUE": (
        "Your invoice is due",
        "Dear {{ name }},\n\nyour invoice of {{ amount }} is due. You can pay it online.\n\n{{ clinic }}",
        "{{ clinic }}: your invoice of {{ amount }} is due.",
    ),
    "INVOICE_PAID": (
        "Thank you: your invoice is paid",
        "Dear {{ name }},\n\nyour invoice is paid in full. Thank you.\n\n{{ clinic }}",
        "{{ clinic }}: your invoice is paid. Thank you.",
    ),
    "REFUND_ISSUED": (
        "A refund of {{ amount }} is on its way",
        "Dear {{ name }},\n\nwe refunded {{ amount }} to your payment method.\n\n{{ clinic }}",
        "{{ clinic }}: we refunded {{ amount }}.",
    ),
    "CLAIM_ADJUDICATED": (
        "Your insurer decided on your claim",
        "Dear {{ name }},\n\nyour insurer decided on the claim for your invoice: {{ decision }}."
        "\n\n{{ clinic }}",
        "{{ clinic }}: your insurer decided on your claim: {{ decision }}.",
    ),
    "RECORD_ACCESS_REQUESTED": (
        "A clinician asks to see your medical record",
        "Dear {{ name }},\n\n{{ requester }} asks for access to your medical record."
        " Open the app to see the request and to grant or deny it.\n\n{{ clinic }}",
        "{{ clinic }}: {{ requester }} asks to see your medical record. Open the app to see the request.",
    ),
    # To the patient and to every admin (`record` says whose: "your medical record" to the patient).
    "EMERGENCY_ACCESS_USED": (
        "A medical record was opened in an emergency",
        "Dear {{ name }},\n\n{{ requester }} opened {{ record }} under emergency access on {{ when }}."
        " Every emergency access is audited and reviewed. Open the app to see the access log."
        "\n\n{{ clinic }}",
        "{{ clinic }}: {{ requester }} opened {{ record }} in an emergency."
        " Open the app to see the access log.",
    ),
}

# What every message's template may use (the notifier fills each, empty when it does not apply).
VARIABLES = frozenset(
    {"clinic", "name", "when", "previous_when", "doctor", "requester", "record", "amount", "decision"}
)
# What ends a line (str.splitlines' set, which the email package refuses in a header value).
_LINE_BREAKS = re.compile(r"[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]+")
_html = SandboxedEnvironment(autoescape=True, undefined=StrictUndefined)
_text = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined)


def default_template(event_type: str, channel: str) -> tuple[str, str]:
    subject, body, short = DEFAULTS[event_type]
    return (subject, body) if channel == EMAIL else ("", short)


def default_templates() -> Iterator[tuple[str, str, str, str]]:
    """(event type, channel, subject, body): every message on every channel has a template."""
    for event_type in DEFAULTS:
        for channel in (EMAIL, SMS, PUSH):
            yield event_type, channel, *default_template(event_type, channel)


def check_template(channel: str, subject: str, body: str) -> None:
    if channel != EMAIL and subject:
        raise InvalidArgument("template.subject", "SMS and push messages have no subject")
    if not body.strip():
        raise InvalidArgument("template.body", "is required: a message needs a text")
    if _LINE_BREAKS.search(subject):
        raise InvalidArgument("template.subject", "must be one line: a subject is a mail header")
    for field, source in (("template.subject", subject), ("template.body", body)):
        try:
            parsed = _text.parse(source)
        except TemplateSyntaxError as error:
            raise InvalidArgument(field, f"line {error.lineno}: {error.message}") from None
        unknown = meta.find_undeclared_variables(parsed) - VARIABLES
        if unknown:
            raise InvalidArgument(
                field, f"uses unknown {', '.join(sorted(unknown))}; known are {', '.join(sorted(VARIABLES))}"
            )


@functools.lru_cache(maxsize=256)
def _compiled(source: str, html: bool):
    """Templates compile once per text (compiling costs more than rendering)."""
    return (_html if html else _text).from_string(source)


def render(subject: str, body: str, variables: dict) -> tuple[str, str, str]:
    """(subject, plain text, HTML with every value escaped) of a message. The subject is one line
    whatever the values hold (a display name with a line break must not add a mail header)."""
    text = _compiled(body, False).render(variables)
    escaped = _compiled(body, True).render(variables)
    html = "<p>" + escaped.replace("\n\n", "</p><p>").replace("\n", "<br>") + "</p>"
    one_line = _LINE_BREAKS.sub(" ", _compiled(subject, False).render(variables)).strip()
    return one_line, text, html
