"""Envelope encryption of chart content, field by field, with AES-256-GCM from `cryptography`.

- Every patient has one data key (32 random bytes). It is stored only wrapped (AES-256-GCM) by a
  key-encryption key (KEK) from the environment, tagged with that KEK's id; the associated data of
  the wrapping binds it to the patient, so a wrapped key copied to another patient does not open.
- Every content field is sealed on its own: `version byte | 12-byte random nonce | ciphertext+tag`,
  with associated data naming the patient, the table, the row id and the field. A ciphertext
  copied onto another row, field or patient fails its tag check: `Tampered` (DATA_LOSS), which
  names the row and field but never content.
- KEKs come from `RECORDS_KEK` ("<id>:<base64 key>", the one that wraps) and `RECORDS_OLD_KEKS`
  (comma-separated, read-only). Rotation (`python -m medical_records.rotate_kek`) re-wraps data
  keys under the current KEK; content is never re-encrypted, so reads go on throughout.

Unwrapped data keys are cached in the process (bounded LRU) so a chart read costs one AES-GCM
open per field, not a KEK operation; a key is only ever in memory of a running service.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections import OrderedDict
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from clinic_platform.errors import ServiceError

FORMAT = 1  # the first byte of every sealed value
NONCE_BYTES = 12
KEY_BYTES = 32
FINGERPRINT_LABEL = b"clinic.medical_records.fingerprint"


class DataLoss(ServiceError):
    """Stored content failed its integrity check (gRPC DATA_LOSS); nothing was shown."""

    status = "DATA_LOSS"


class Tampered(DataLoss):
    def __init__(self, table: str, row_id: str, field: str) -> None:
        super().__init__(
            f"stored {table}.{field} of entry {row_id} failed its integrity check and was not shown;"
            " the incident is in the access log"
        )
        self.table, self.row_id, self.field = table, row_id, field


class KeyUnavailable(DataLoss):
    def __init__(self, kek_id: str) -> None:
        super().__init__(f"the key-encryption key {kek_id!r} is not configured; the chart cannot be read")
        self.kek_id = kek_id


def parse_kek(value: str) -> tuple[str, bytes]:
    """'<id>:<base64 32 bytes>' -> (id, key)."""
    kek_id, sep, encoded = value.strip().partition(":")
    if not sep or not kek_id:
        raise ValueError("a KEK is '<id>:<base64 key>'")
    try:
        padded = encoded.strip() + "=" * (-len(encoded.strip()) % 4)
        raw = base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
    except (binascii.Error, ValueError):
        raise ValueError(f"KEK {kek_id!r} is not base64") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"KEK {kek_id!r} must be 32 bytes")
    return kek_id, raw


def new_kek_value(kek_id: str) -> str:
    return f"{kek_id}:{base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode()}"


@dataclass(frozen=True)
class WrappedKey:
    kek_id: str
    wrapped: bytes


class KeyRing:
    """The KEKs this process knows: one current (wraps new keys), older ones (unwrap only)."""

    def __init__(self, current: str, old: str = "") -> None:
        self.current_id, key = parse_kek(current)
        self._keks = {self.current_id: AESGCM(key)}
        for value in filter(None, (v.strip() for v in old.split(","))):
            kek_id, raw = parse_kek(value)
            self._keks.setdefault(kek_id, AESGCM(raw))

    @staticmethod
    def _aad(patient_id: str, kek_id: str) -> bytes:
        return f"clinic.medical_records.data_key|{patient_id}|{kek_id}".encode()

    def wrap(self, patient_id: str, data_key: bytes) -> WrappedKey:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keks[self.current_id].encrypt(nonce, data_key, self._aad(patient_id, self.current_id))
        return WrappedKey(self.current_id, bytes([FORMAT]) + nonce + sealed)

    def unwrap(self, patient_id: str, wrapped: WrappedKey) -> bytes:
        kek = self._keks.get(wrapped.kek_id)
        if kek is None:
            raise KeyUnavailable(wrapped.kek_id)
        blob = wrapped.wrapped
        try:
            return kek.decrypt(
                blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :], self._aad(patient_id, wrapped.kek_id)
            )
        except (InvalidTag, ValueError):
            raise Tampered("data_keys", patient_id, "wrapped_key") from None

    def rewrap(self, patient_id: str, wrapped: WrappedKey) -> WrappedKey:
        return self.wrap(patient_id, self.unwrap(patient_id, wrapped))


class FieldCipher:
    """Seals and opens one patient's fields with that patient's data key."""

    def __init__(self, patient_id: str, data_key: bytes) -> None:
        self.patient_id = patient_id
        self._aead = AESGCM(data_key)
        # For HMACs over this patient's requests (idempotency fingerprints), never for sealing.
        self.fingerprint_key = hmac.new(data_key, FINGERPRINT_LABEL, hashlib.sha256).digest()

    def _aad(self, table: str, row_id: str, field: str) -> bytes:
        return f"clinic.medical_records|{self.patient_id}|{table}|{row_id}|{field}".encode()

    def seal(self, table: str, row_id: str, field: str, value: str) -> bytes:
        return self.seal_bytes(table, row_id, field, value.encode())

    def seal_bytes(self, table: str, row_id: str, field: str, value: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, value, self._aad(table, row_id, field))
        return bytes([FORMAT]) + nonce + sealed

    def open(self, table: str, row_id: str, field: str, blob: bytes) -> str:
        return self.open_bytes(table, row_id, field, blob).decode()

    def open_bytes(self, table: str, row_id: str, field: str, blob: bytes) -> bytes:
        if len(blob) < 1 + NONCE_BYTES + 16 or blob[0] != FORMAT:
            raise Tampered(table, row_id, field)
        try:
            return self._aead.decrypt(
                blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :], self._aad(table, row_id, field)
            )
        except InvalidTag:
            raise Tampered(table, row_id, field) from None


class DataKeyCache:
    """Unwrapped data keys by patient (LRU), so reads do not unwrap on every call. Each key is kept
    with the wrapped key it came from and used only while that is what the database holds: a key
    made by a write that rolled back never seals anything after another writer's key was stored."""

    def __init__(self, ring: KeyRing, size: int = 10_000) -> None:
        self.ring = ring
        self.size = size
        self._keys: OrderedDict[str, tuple[bytes, bytes]] = OrderedDict()  # patient -> (wrapped, key)

    def new_key(self, patient_id: str) -> tuple[bytes, WrappedKey]:
        data_key = AESGCM.generate_key(bit_length=256)
        return data_key, self.ring.wrap(patient_id, data_key)

    def cipher(self, patient_id: str, wrapped: WrappedKey) -> FieldCipher:
        cached = self._keys.get(patient_id)
        if cached is not None and cached[0] == wrapped.wrapped:
            self._keys.move_to_end(patient_id)
            return FieldCipher(patient_id, cached[1])
        return self.remember(patient_id, wrapped, self.ring.unwrap(patient_id, wrapped))

    def remember(self, patient_id: str, wrapped: WrappedKey, data_key: bytes) -> FieldCipher:
        self._keys[patient_id] = (wrapped.wrapped, data_key)
        self._keys.move_to_end(patient_id)
        if len(self._keys) > self.size:
            self._keys.popitem(last=False)
        return FieldCipher(patient_id, data_key)
