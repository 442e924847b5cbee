from clinic_platform.migrations import run_env
from insurance.store import metadata

run_env(metadata)
