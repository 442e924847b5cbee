"""Composition root of the user management service: settings -> database, Redis, keys -> use
cases -> servicer -> server. It verifies access tokens with its own keys (no JWKS round trip)."""

from __future__ import annotations

import logging
from datetime import timedelta

from pydantic import SecretStr

from clinic.user_management.v1 import user_management_service_pb2 as pb
from clinic.user_management.v1 import user_management_service_pb2_grpc as rpc
from clinic_platform.auth import OPEN_METHODS, TokenVerifier
from clinic_platform.outbox import Outbox
from clinic_platform.server import ServiceApp, run
from clinic_platform.settings import ServiceSettings
from user_management import store
from user_management.accounts import Accounts
from user_management.api import UserManagementApi
from user_management.bootstrap import ensure_bootstrap_admin
from user_management.keys import KeyRing, decode_kek
from user_management.logins import Logins
from user_management.passwords import OWASP_MEMORY_KIB, OWASP_TIME_COST, Passwords
from user_management.preferences import NotificationPreferences
from user_management.sessions import SessionStore
from user_management.tokens import TokenIssuer

log = logging.getLogger(__name__)


class Settings(ServiceSettings):
    service_name = "user_management"

    # 32 random bytes, base64: seals the private signing keys in the database. From a Secret.
    signing_key_encryption_key: SecretStr
    access_token_minutes: int = 15
    refresh_token_audience: str = "clinic-mesh-refresh"  # noqa: S105 - an audience name
    session_idle_minutes: int = 30
    session_absolute_hours: int = 12
    login_max_failures: int = 5
    login_lockout_minutes: int = 15
    # A rotated key signs only this long after it is published: longer than any JWKS cache.
    key_publish_delay_seconds: int = 60
    key_reload_seconds: float = 5.0
    password_hash_memory_kib: int = OWASP_MEMORY_KIB
    password_hash_time_cost: int = OWASP_TIME_COST
    # The first admin, created at start when no account has this email (from a Secret).
    bootstrap_admin_email: str = ""
    bootstrap_admin_password: SecretStr = SecretStr("")


def build(settings: Settings) -> ServiceApp:
    app = ServiceApp(settings)
    db = app.use_database(store.metadata)
    keys = KeyRing(
        db,
        decode_kek(settings.signing_key_encryption_key.get_secret_value()),
        publish_delay=timedelta(seconds=settings.key_publish_delay_seconds),
        token_lifetime=timedelta(minutes=settings.access_token_minutes),
        reload_seconds=settings.key_reload_seconds,
    )
    authenticator = app.authenticate(open_methods=OPEN_METHODS, keys=keys)
    outbox = Outbox(store.metadata, settings.topic)
    passwords = Passwords(settings.password_hash_memory_kib, settings.password_hash_time_cost)
    sessions = SessionStore(
        app.use_redis(),
        idle_seconds=settings.session_idle_minutes * 60,
        absolute_seconds=settings.session_absolute_hours * 3600,
        max_failures=settings.login_max_failures,
        lockout_seconds=settings.login_lockout_minutes * 60,
    )
    tokens = TokenIssuer(
        keys,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        refresh_audience=settings.refresh_token_audience,
        access_seconds=settings.access_token_minutes * 60,
    )
    accounts = Accounts(db, outbox, passwords, sessions)
    logins = Logins(
        db,
        passwords,
        sessions,
        tokens=tokens,
        refresh_verifier=TokenVerifier(
            keys, issuer=settings.jwt_issuer, audience=settings.refresh_token_audience
        ),
        session_check=authenticator.sessions,
    )
    app.on_start.append(keys.ensure_one)
    app.on_start.append(lambda: ensure_bootstrap_admin(db, outbox, passwords, settings))
    app.background.append(keys.run)
    app.add_servicer(
        rpc.add_UserManagementServiceServicer_to_server,
        UserManagementApi(accounts, NotificationPreferences(db, outbox, accounts), logins, keys),
        pb.DESCRIPTOR,
        "UserManagementService",
    )
    return app


if __name__ == "__main__":
    run(build, Settings)
