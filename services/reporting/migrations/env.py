from clinic_platform.migrations import run_env
from reporting.store import metadata

run_env(metadata)
