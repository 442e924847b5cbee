"""The record-access messages' new default texts: emergency access is also told to admins (the
text says whose record through `record`), and both say "open the app". Seeded templates still
holding the old default text are replaced; a template an admin edited is left as it is.

Revision ID: nt_0003
Revises: nt_0002
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "nt_0003"
down_revision = "nt_0002"
branch_labels = None
depends_on = None

OLD = {
    "RECORD_ACCESS_REQUESTED": (
        "A clinician asks to see your chart",
        "Dear {{ name }},\n\n{{ requester }} asks for access to your medical record."
        " Sign in to grant or deny it.\n\n{{ clinic }}",
        "{{ clinic }}: {{ requester }} asks to see your medical record. Sign in to answer.",
    ),
    "EMERGENCY_ACCESS_USED": (
        "Your chart was opened in an emergency",
        "Dear {{ name }},\n\n{{ requester }} opened your medical record under emergency access"
        " on {{ when }}. This access is audited; contact us if you have questions.\n\n{{ clinic }}",
        "{{ clinic }}: {{ requester }} opened your medical record in an emergency. It is audited.",
    ),
}

# Written out (not imported from notification.domain): a migration must not change when the
# defaults change again.
NEW = {
    "RECORD_ACCESS_REQUESTED": (
        "A clinician asks to see your medical record",
        "Dear {{ name }},\n\n{{ requester }} asks for access to your medical record."
        " Open the app to see the request and to grant or deny it.\n\n{{ clinic }}",
        "{{ clinic }}: {{ requester }} asks to see your medical record. Open the app to see the request.",
    ),
    "EMERGENCY_ACCESS_USED": (
        "A medical record was opened in an emergency",
        "Dear {{ name }},\n\n{{ requester }} opened {{ record }} under emergency access on {{ when }}."
        " Every emergency access is audited and reviewed. Open the app to see the access log."
        "\n\n{{ clinic }}",
        "{{ clinic }}: {{ requester }} opened {{ record }} in an emergency."
        " Open the app to see the access log.",
    ),
}

REPLACE = sa.text(
    "UPDATE templates SET subject = :subject, body = :body, update_time = now()"
    " WHERE event_type = :event_type AND channel = :channel AND subject = :old_subject AND body = :old_body"
)


def _template(texts: dict, event_type: str, channel: str) -> tuple[str, str]:
    subject, body, short = texts[event_type]
    return (subject, body) if channel == "EMAIL" else ("", short)


def upgrade() -> None:
    for event_type in OLD:
        for channel in ("EMAIL", "SMS", "PUSH"):
            old_subject, old_body = _template(OLD, event_type, channel)
            subject, body = _template(NEW, event_type, channel)
            op.execute(
                REPLACE.bindparams(
                    subject=subject,
                    body=body,
                    event_type=event_type,
                    channel=channel,
                    old_subject=old_subject,
                    old_body=old_body,
                )
            )


def downgrade() -> None:
    pass  # the old texts say "your medical record" to admins too: not worth restoring
