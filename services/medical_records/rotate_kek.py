"""Re-wrap every patient's data key under the current KEK, while the service serves.

    RECORDS_KEK=<new id>:<key> RECORDS_OLD_KEKS=<old id>:<key> python -m medical_records.rotate_kek

Run it after every replica has been given the new RECORDS_KEK (and the old key in
RECORDS_OLD_KEKS), so new keys are wrapped by the new KEK and old ones still open. It takes batches
of keys not yet under the current KEK (`FOR UPDATE SKIP LOCKED`, one short transaction each), so
readers are never blocked for long and two runs share the work. Content is not re-encrypted: a
data key stays the same, only its wrapping changes. When it reports `remaining: 0`, drop the old
KEK from RECORDS_OLD_KEKS.
"""

from __future__ import annotations

import asyncio
import json

from medical_records import store
from medical_records.crypto import KeyRing, WrappedKey
from medical_records.settings import Settings
from medical_records.store import chart as sql


async def rotate(database_url: str, ring: KeyRing, batch: int = 200) -> dict[str, int]:
    conn = await store.connect(database_url)
    rewrapped = 0
    try:
        while True:
            async with conn.transaction():
                rows = await sql.keys_not_under(conn, ring.current_id, batch)
                for row in rows:
                    patient_id = str(row["patient_id"])
                    new = ring.rewrap(patient_id, WrappedKey(row["kek_id"], bytes(row["wrapped_key"])))
                    await sql.rewrap(conn, row["patient_id"], new.kek_id, new.wrapped)
            rewrapped += len(rows)
            if len(rows) < batch:
                break
        counts = await sql.count_keys_by_kek(conn)
    finally:
        await conn.close()
    remaining = sum(n for kek_id, n in counts.items() if kek_id != ring.current_id)
    return {"rewrapped": rewrapped, "remaining": remaining}


def main() -> int:
    settings = Settings()
    ring = KeyRing(settings.records_kek.get_secret_value(), settings.records_old_keks.get_secret_value())
    print(json.dumps(asyncio.run(rotate(settings.database_url, ring))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
