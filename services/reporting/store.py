"""Tables of the reporting database."""

from clinic_platform.db import new_metadata

metadata = new_metadata()
