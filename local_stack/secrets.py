"""Credentials the local stack generates on first use and keeps in its state folder (mode 600,
never committed): service role passwords, the signing-key encryption key, the first admin."""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path


def random_password() -> str:
    return secrets.token_urlsafe(24)


def random_key() -> str:
    """32 random bytes, base64url: an AES-256 key."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


class SecretFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def values(self, wanted: dict[str, Callable[[], str]]) -> dict[str, str]:
        """The named secrets, generating (and saving) the ones not made yet."""
        known = json.loads(self.path.read_text()) if self.path.exists() else {}
        missing = {name: make() for name, make in wanted.items() if name not in known}
        if missing:
            known.update(missing)
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.path.touch(mode=0o600)
            self.path.write_text(json.dumps(known, indent=2))
        return {name: known[name] for name in wanted}
