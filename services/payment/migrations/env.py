from clinic_platform.migrations import run_env
from payment.store import metadata

run_env(metadata)
