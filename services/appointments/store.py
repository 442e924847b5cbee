"""Tables of the appointments database."""

from clinic_platform.db import new_metadata

metadata = new_metadata()
