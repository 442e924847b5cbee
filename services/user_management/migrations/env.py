from clinic_platform.migrations import run_env
from user_management.store import metadata

run_env(metadata)
