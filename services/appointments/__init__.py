"""The appointments service: doctor schedules, slot search and appointments."""
