"""Tables of the notification database.

A *notice* is "this person should hear about this event"; once the person's contact details and
preferences are known (a projection of user events, which may lag), it fans out into one
*delivery* per chosen channel. A delivery is the idempotency record of one message: unique per
(event, recipient, channel), written before anything is sent.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

from clinic_platform.db import new_metadata

metadata = new_metadata()

recipients = Table(
    "recipients",
    metadata,
    Column("id", Uuid, primary_key=True),  # the user id
    Column("email", Text, nullable=False),
    Column("phone_number", Text, nullable=False),
    Column("display_name", Text, nullable=False),
    Column("role", Text, nullable=False),
    # {"messages": {kind: [channels]}, "opted_out_channels": [channels]}
    Column("preferences", JSONB, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("user_version", Integer, nullable=False),
)

notices = Table(
    "notices",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("source_event_id", Uuid, nullable=False),
    Column("recipient_id", Uuid, nullable=False),
    Column("event_type", Text, nullable=False),  # EventType without prefix, e.g. APPOINTMENT_BOOKED
    Column("variables", JSONB, nullable=False),
    Column("status", Text, nullable=False),  # NEW, EXPANDED, ABANDONED
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("source_event_id", "recipient_id", name="uq_notices_event_recipient"),
    Index("ix_notices_new", "create_time", postgresql_where="status = 'NEW'"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("notice_id", Uuid, nullable=False),
    Column("source_event_id", Uuid, nullable=False),
    Column("recipient_id", Uuid, nullable=False),
    Column("channel", Text, nullable=False),  # EMAIL, SMS, PUSH
    Column("event_type", Text, nullable=False),
    Column("address", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("html", Text, nullable=False, server_default=""),
    Column("status", Text, nullable=False),  # PENDING, SENT, FAILED
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("failure_reason", Text, nullable=False, server_default=""),
    Column("next_attempt_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("send_time", DateTime(timezone=True)),
    Column("update_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint(
        "source_event_id", "recipient_id", "channel", name="uq_deliveries_event_recipient_channel"
    ),
    Index("ix_deliveries_due", "next_attempt_time", postgresql_where="status = 'PENDING'"),
    Index("ix_deliveries_recipient", "recipient_id", "create_time"),
    # Finished deliveries whose text is still kept: what retention prunes next.
    Index(
        "ix_deliveries_unpruned",
        "update_time",
        postgresql_where="status IN ('SENT', 'FAILED') AND subject <> ''",
    ),
)

source_events = Table(
    "source_events",
    metadata,
    Column("event_id", Uuid, primary_key=True),  # kept to hand an event to the DLQ if its messages fail
    Column("topic", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("aggregate_key", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("event_time", DateTime(timezone=True)),
)

reminders = Table(
    "reminders",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("appointment_id", Uuid, nullable=False),
    Column("patient_id", Uuid, nullable=False),
    Column("doctor_id", Uuid, nullable=False),
    Column("visit_type", Text, nullable=False),
    Column("appointment_start_time", DateTime(timezone=True), nullable=False),
    Column("send_time", DateTime(timezone=True), nullable=False),
    Column("status", Text, nullable=False),  # SCHEDULED, SENT, CANCELLED
    Column("appointment_version", Integer, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("update_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_reminders_due", "send_time", postgresql_where="status = 'SCHEDULED'"),
    Index("ix_reminders_appointment", "appointment_id"),
)

templates = Table(
    "templates",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("event_type", Text, nullable=False),
    Column("channel", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("event_type", "channel", name="uq_templates_event_channel"),
)
