"""Password hashing with argon2id at OWASP's floor or above (m=19 MiB, t=2, p=1), PHC strings.

Hashing takes tens of milliseconds of CPU, so it runs in worker threads (argon2 releases the
GIL) and never stalls the event loop. A login for an unknown email verifies against a dummy
hash, so it takes as long as a wrong password does.
"""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

OWASP_MEMORY_KIB = 19 * 1024
OWASP_TIME_COST = 2


class Passwords:
    def __init__(self, memory_kib: int = OWASP_MEMORY_KIB, time_cost: int = OWASP_TIME_COST) -> None:
        if memory_kib < OWASP_MEMORY_KIB or time_cost < OWASP_TIME_COST:
            raise ValueError("argon2id parameters below OWASP's floor (m=19 MiB, t=2, p=1)")
        self.hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1, type=Type.ID)
        self._dummy = self.hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """True when the password matches; for a missing account, spends the same time and says no."""
        return await asyncio.to_thread(
            self._verify, stored_hash or self._dummy, password, stored_hash is not None
        )

    def _verify(self, stored_hash: str, password: str, real: bool) -> bool:
        try:
            return self.hasher.verify(stored_hash, password) and real
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        """True when the hash was made with weaker parameters than today's."""
        return self.hasher.check_needs_rehash(stored_hash)
