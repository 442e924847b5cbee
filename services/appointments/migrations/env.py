from appointments.store import metadata
from clinic_platform.migrations import run_env

run_env(metadata)
