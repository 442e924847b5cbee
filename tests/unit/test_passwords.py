"""Password hashing: argon2id PHC strings at OWASP's floor or above, rehash when parameters rise."""

from __future__ import annotations

import pytest

from user_management.passwords import OWASP_MEMORY_KIB, Passwords


async def test_hashes_are_argon2id_phc_strings_at_owasps_floor_and_verify():
    passwords = Passwords()
    stored = await passwords.hash("a long passphrase 4 tests")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert await passwords.verify(stored, "a long passphrase 4 tests")
    assert not await passwords.verify(stored, "a long passphrase 4 test")
    assert not await passwords.verify(None, "a long passphrase 4 tests")  # unknown account: a plain no


def test_parameters_below_the_floor_are_refused():
    with pytest.raises(ValueError, match="OWASP"):
        Passwords(memory_kib=OWASP_MEMORY_KIB - 1)
    with pytest.raises(ValueError, match="OWASP"):
        Passwords(time_cost=1)


async def test_a_hash_made_with_weaker_parameters_than_todays_needs_a_rehash():
    old = await Passwords().hash("a long passphrase 4 tests")
    stronger = Passwords(memory_kib=OWASP_MEMORY_KIB * 2, time_cost=3)
    assert stronger.needs_rehash(old)
    assert await stronger.verify(old, "a long passphrase 4 tests")  # the old hash still signs in
    assert not stronger.needs_rehash(await stronger.hash("a long passphrase 4 tests"))
