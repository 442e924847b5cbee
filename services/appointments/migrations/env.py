from clinic_platform.migrations import run_env
from appointments.store import metadata

run_env(metadata)
