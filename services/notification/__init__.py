"""The notification service: templates, deliveries by email, SMS and push, and reminders."""
