"""Every table and every query of the appointments service; the only code here (with
migrations/) that speaks SQL: tables.py (the schema), directory.py (doctors, patients, weekly
templates and the user projection), calendar.py (appointments and time off, with their events)."""

from appointments.store.tables import metadata

__all__ = ["metadata"]
