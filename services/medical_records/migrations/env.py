from clinic_platform.migrations import run_env
from medical_records.store import metadata

run_env(metadata)
