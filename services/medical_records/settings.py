"""Settings of the medical records service (environment variables, defaults for the local stack)."""

from __future__ import annotations

from pydantic import SecretStr

from clinic_platform.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name = "medical_records"

    # The key-encryption key that wraps patients' data keys, "<id>:<base64 32 bytes>" (a Kubernetes
    # Secret in production; the local stack generates one into its state folder).
    records_kek: SecretStr = SecretStr("")
    # Earlier KEKs, comma-separated, accepted for unwrapping until `rotate_kek` has re-wrapped every
    # data key under RECORDS_KEK.
    records_old_keks: SecretStr = SecretStr("")
    # A doctor's appointment with a patient is a care relationship from booking until this many days
    # after it ended (cancelled appointments never count).
    care_relationship_days: float = 90.0
    # How long break-the-glass access lasts.
    emergency_access_hours: float = 4.0
    # A patient's grant lasts this long unless they give an earlier end, and never longer.
    access_grant_days: float = 90.0
