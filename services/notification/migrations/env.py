from clinic_platform.migrations import run_env
from notification.store import metadata

run_env(metadata)
