"""Every table and every query of the notification service; no other module of the service
speaks SQL.

- `tables`: the tables (recipients, notices, deliveries, source_events, reminders, templates).
- `projection`: what the event handlers write (recipients, reminder schedule, notices), and the
  reminders that fall due.
- `dispatch`: the dispatcher's fan-out (notices into deliveries), claims, results, the source
  event for the DLQ, and the retention of message texts.
- `rpcs`: the queries behind NotificationService's RPCs, and the seeded default templates.
"""

from notification.store.dispatch import (
    abandon_notices,
    add_deliveries,
    claim_due,
    display_names,
    new_notices,
    prune_bodies,
    record_failure,
    record_sent,
    source_event,
    templates_in_use,
)
from notification.store.projection import (
    SourceEvent,
    active_admins,
    add_notice,
    apply_appointment_event,
    close_reminder,
    deactivate_recipient,
    due_reminders,
    save_recipient,
)
from notification.store.rpcs import (
    get_notification,
    get_template,
    list_notifications,
    list_reminders,
    list_templates,
    seed_templates,
    update_template,
)
from notification.store.tables import (
    deliveries,
    metadata,
    notices,
    recipients,
    reminders,
    source_events,
    templates,
)

__all__ = [
    "SourceEvent",
    "abandon_notices",
    "active_admins",
    "add_deliveries",
    "add_notice",
    "apply_appointment_event",
    "claim_due",
    "close_reminder",
    "deactivate_recipient",
    "deliveries",
    "display_names",
    "due_reminders",
    "get_notification",
    "get_template",
    "list_notifications",
    "list_reminders",
    "list_templates",
    "metadata",
    "new_notices",
    "notices",
    "prune_bodies",
    "recipients",
    "record_failure",
    "record_sent",
    "reminders",
    "save_recipient",
    "seed_templates",
    "source_event",
    "source_events",
    "templates",
    "templates_in_use",
    "update_template",
]
