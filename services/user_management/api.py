"""The UserManagementService servicer: proto <-> domain mapping around the account rules."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError

from clinic.user_management.v1 import events_pb2, resources_pb2
from clinic.user_management.v1 import user_management_service_pb2 as pb
from clinic.user_management.v1 import user_management_service_pb2_grpc as rpc
from clinic_platform import auth
from clinic_platform.auth import REFRESH_TOKEN_TYPE, Role, SessionCheck, TokenVerifier
from clinic_platform.convert import (
    enum_name,
    enum_value,
    from_date,
    mask_paths,
    parse_enum,
    parse_uuid,
    timestamp,
    to_date,
)
from clinic_platform.db import Database
from clinic_platform.errors import AlreadyExists, InvalidArgument, NotFound, Unauthenticated
from clinic_platform.idempotency import IdempotencyKeys
from clinic_platform.outbox import Outbox
from clinic_platform.pagination import page_request
from user_management import domain, store
from user_management.domain import Preferences, Profile
from user_management.keys import KeyRing
from user_management.passwords import Passwords
from user_management.sessions import Rotation, SessionStore
from user_management.tokens import TokenIssuer

INVALID_LOGIN = "invalid email or password"  # the one answer for every failed login


@dataclass
class Identity:
    """What the servicer works with, built by main.py."""

    db: Database
    outbox: Outbox
    passwords: Passwords
    sessions: SessionStore
    keys: KeyRing
    tokens: TokenIssuer
    refresh_verifier: TokenVerifier
    session_check: SessionCheck  # this process's cache of live sessions


def _role(value: int, field: str) -> Role:
    if value == resources_pb2.ROLE_UNSPECIFIED:
        raise InvalidArgument(field, "is required")
    return Role(enum_name(resources_pb2.Role, value))


def user_message(row) -> resources_pb2.User:
    return resources_pb2.User(
        id=str(row.id),
        email=row.email,
        given_name=row.given_name,
        family_name=row.family_name,
        display_name=row.display_name,
        phone_number=row.phone_number,
        birth_date=to_date(row.birth_date),
        role=enum_value(resources_pb2.Role, row.role),
        specialty=row.specialty,
        status=enum_value(resources_pb2.UserStatus, row.status),
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )


def preferences_message(row) -> resources_pb2.NotificationPreferences:
    prefs = Preferences.from_json(row.preferences)
    has_phone = bool(row.phone_number)
    return resources_pb2.NotificationPreferences(
        user_id=str(row.id),
        messages=[
            resources_pb2.MessagePreference(
                kind=enum_value(resources_pb2.MessageKind, kind),
                channels=[
                    enum_value(resources_pb2.Channel, c)
                    for c in prefs.messages.get(kind, ["EMAIL", "SMS"] if has_phone else ["EMAIL"])
                ],
            )
            for kind in domain.MESSAGE_KINDS
        ],
        opted_out_channels=[enum_value(resources_pb2.Channel, c) for c in prefs.opted_out_channels],
        update_time=timestamp(row.preferences_update_time),
    )


def _snapshot(event_type, row, **extra):
    return event_type(
        user_id=str(row.id),
        version=row.version,
        email=row.email,
        phone_number=row.phone_number,
        given_name=row.given_name,
        family_name=row.family_name,
        display_name=row.display_name,
        role=enum_value(resources_pb2.Role, row.role),
        specialty=row.specialty,
        notification_preferences=preferences_message(row),
        **extra,
    )


def _profile(user: resources_pb2.User) -> Profile:
    return Profile(
        email=user.email,
        given_name=user.given_name,
        family_name=user.family_name,
        display_name=user.display_name,
        phone_number=user.phone_number,
        birth_date=from_date(user.birth_date, "user.birth_date", required=False),
        specialty=user.specialty,
    )


class UserManagementApi(rpc.UserManagementServiceServicer):
    def __init__(self, identity: Identity) -> None:
        self.id = identity
        self.db = identity.db
        self.idempotency = IdempotencyKeys(identity.db.metadata)

    # -- accounts -------------------------------------------------------------------------------
    async def Register(self, request, context):
        birth = from_date(request.birth_date, "birth_date")
        profile = Profile(
            request.email, request.given_name, request.family_name, "", request.phone_number, birth
        )
        domain.check_profile(profile, role=Role.PATIENT)
        domain.check_password(request.password, profile)
        return await self._create(
            request,
            profile,
            Role.PATIENT,
            request.password,
            scope="Register",
            response_type=pb.RegisterResponse,
        )

    async def CreateUser(self, request, context):
        me = auth.caller()
        role = _role(request.user.role, "user.role")
        domain.may_create(me, role)
        profile = domain.check_profile(_profile(request.user), role=role, prefix="user.")
        domain.check_password(request.password, profile)
        return await self._create(
            request,
            profile,
            role,
            request.password,
            scope=f"CreateUser:{me.user_id}",
            response_type=pb.CreateUserResponse,
        )

    async def _create(
        self, request, profile: Profile, role: Role, password: str, *, scope: str, response_type
    ):
        password_hash = await self.id.passwords.hash(password)
        async with self.db.transaction() as session:
            if request.request_id:
                earlier = await self.idempotency.claim(
                    session, scope, request.request_id, request, response_type, secret_fields=("password",)
                )
                if earlier is not None:
                    return earlier
            row = (
                await session.execute(
                    insert(store.users)
                    .values(
                        id=uuid.uuid4(),
                        email=profile.email,
                        email_key=domain.email_key(profile.email),
                        given_name=profile.given_name,
                        family_name=profile.family_name,
                        display_name=domain.display_name_of(profile),
                        phone_number=profile.phone_number,
                        birth_date=profile.birth_date,
                        role=role.value,
                        specialty=profile.specialty,
                        status="ACTIVE",
                        password_hash=password_hash,
                        version=1,
                    )
                    .on_conflict_do_nothing(index_elements=["email_key"])
                    .returning(store.users)
                )
            ).first()
            if row is None:
                raise AlreadyExists("an account with this email address already exists")
            await self.id.outbox.add(
                session,
                _snapshot(events_pb2.UserRegistered, row, create_time=timestamp(row.create_time)),
                aggregate_id=str(row.id),
            )
            response = response_type(user=user_message(row))
            if request.request_id:
                await self.idempotency.remember(session, scope, request.request_id, response)
        return response

    async def GetCurrentUser(self, request, context):
        me = auth.caller()
        return pb.GetCurrentUserResponse(user=user_message(await self._user(me.user_id)))

    async def GetUser(self, request, context):
        user_id = parse_uuid(request.user_id, "user_id")
        domain.may_view(auth.caller(), str(user_id))
        return pb.GetUserResponse(user=user_message(await self._user(user_id)))

    async def ListUsers(self, request, context):
        domain.may_list(auth.caller())
        role = parse_enum(resources_pb2.Role, request.role, "role") if request.role else None
        page = page_request(
            request.page_size, request.page_token, {"role": role, "query": request.query}, maximum=200
        )
        async with self.db.sessions() as session:
            rows = await store.list_users(
                session, role=role, query=request.query.strip(), after=page.after, limit=page.size
            )
        rows, next_token = page.take(rows, lambda r: [r.family_name, r.given_name, r.id])
        return pb.ListUsersResponse(users=[user_message(r) for r in rows], next_page_token=next_token)

    async def UpdateUser(self, request, context):
        me = auth.caller()
        user_id = parse_uuid(request.user_id, "user_id")
        paths = mask_paths(request.update_mask, domain.ADMIN_FIELDS)
        async with self.db.transaction() as session:
            row = await store.user_by_id(session, user_id, for_update=True)
            if row is None:
                raise NotFound(f"user {user_id} not found")
            domain.may_update(me, str(user_id), Role(row.role), paths)
            new_role = _role(request.user.role, "user.role") if "role" in paths else Role(row.role)
            new_status = row.status
            if "status" in paths:
                new_status = parse_enum(
                    resources_pb2.UserStatus,
                    resources_pb2.UserStatus.Name(request.user.status),
                    "user.status",
                )
            changes = self._profile_changes(request.user, row, paths, new_role)
            if (
                row.role == "ADMIN"
                and row.status == "ACTIVE"
                and (new_role is not Role.ADMIN or new_status != "ACTIVE")
            ):
                domain.keep_an_admin(await store.count_active_admins(session, excluding=user_id))
            changes |= {
                "role": new_role.value,
                "status": new_status,
                "version": row.version + 1,
                "update_time": store.now(),
            }
            try:
                row = (
                    await session.execute(
                        update(store.users)
                        .where(store.users.c.id == user_id)
                        .values(**changes)
                        .returning(store.users)
                    )
                ).one()
            except IntegrityError:
                raise AlreadyExists("an account with this email address already exists") from None
            await self.id.outbox.add(
                session,
                _snapshot(
                    events_pb2.UserUpdated,
                    row,
                    status=enum_value(resources_pb2.UserStatus, row.status),
                    update_time=timestamp(row.update_time),
                ),
                aggregate_id=str(row.id),
            )
        if {"role", "status"} & paths:
            await self.id.sessions.end_all(str(user_id))  # tokens must not outlive a changed role
        return pb.UpdateUserResponse(user=user_message(row))

    @staticmethod
    def _profile_changes(user: resources_pb2.User, row, paths: set[str], role: Role) -> dict:
        profile = Profile(
            row.email,
            row.given_name,
            row.family_name,
            row.display_name,
            row.phone_number,
            row.birth_date,
            row.specialty,
        )
        wanted = _profile(user)
        for path in paths & (domain.PROFILE_FIELDS | {"specialty"}):
            setattr(profile, path, getattr(wanted, path))
        if role is not Role.DOCTOR and "specialty" not in paths:
            profile.specialty = ""  # a specialty belongs to doctors only
        checked = paths | ({"specialty"} if "role" in paths else set())
        domain.check_profile(
            profile, role=role, prefix="user.", paths=checked & (domain.PROFILE_FIELDS | {"specialty"})
        )
        changes = {path: getattr(profile, path) for path in checked & (domain.PROFILE_FIELDS | {"specialty"})}
        if "email" in changes:
            changes["email_key"] = domain.email_key(profile.email)
        if "display_name" in changes and not changes["display_name"]:
            changes["display_name"] = domain.display_name_of(profile)
        return changes

    async def DeactivateUser(self, request, context):
        user_id = parse_uuid(request.user_id, "user_id")
        domain.may_view(auth.caller(), str(user_id))  # others learn nothing about the account
        domain.may_deactivate(auth.require_role(Role.ADMIN), str(user_id))
        async with self.db.transaction() as session:
            row = await store.user_by_id(session, user_id, for_update=True)
            if row is None:
                raise NotFound(f"user {user_id} not found")
            if row.status == "DEACTIVATED":
                return pb.DeactivateUserResponse(user=user_message(row))
            if row.role == "ADMIN":
                domain.keep_an_admin(await store.count_active_admins(session, excluding=user_id))
            row = (
                await session.execute(
                    update(store.users)
                    .where(store.users.c.id == user_id)
                    .values(status="DEACTIVATED", version=row.version + 1, update_time=store.now())
                    .returning(store.users)
                )
            ).one()
            event = events_pb2.UserDeactivated(
                user_id=str(row.id),
                version=row.version,
                role=enum_value(resources_pb2.Role, row.role),
                deactivate_time=timestamp(row.update_time),
            )
            await self.id.outbox.add(session, event, aggregate_id=str(row.id))
        await self.id.sessions.end_all(str(user_id))
        return pb.DeactivateUserResponse(user=user_message(row))

    async def _user(self, user_id):
        async with self.db.sessions() as session:
            row = await store.user_by_id(session, user_id)
        if row is None:
            raise NotFound(f"user {user_id} not found")
        return row

    # -- notification preferences ---------------------------------------------------------------
    async def GetNotificationPreferences(self, request, context):
        user_id = parse_uuid(request.user_id, "user_id")
        domain.may_manage_preferences(auth.caller(), str(user_id))
        return pb.GetNotificationPreferencesResponse(
            notification_preferences=preferences_message(await self._user(user_id))
        )

    async def UpdateNotificationPreferences(self, request, context):
        user_id = parse_uuid(request.user_id, "user_id")
        domain.may_manage_preferences(auth.caller(), str(user_id))
        paths = mask_paths(request.update_mask, {"messages", "opted_out_channels"})
        wanted = request.notification_preferences
        checked = domain.check_preferences(
            [
                (
                    enum_name(resources_pb2.MessageKind, m.kind),
                    [enum_name(resources_pb2.Channel, c) for c in m.channels],
                )
                for m in wanted.messages
            ],
            [enum_name(resources_pb2.Channel, c) for c in wanted.opted_out_channels],
        )
        async with self.db.transaction() as session:
            row = await store.user_by_id(session, user_id, for_update=True)
            if row is None:
                raise NotFound(f"user {user_id} not found")
            current = Preferences.from_json(row.preferences)
            if "messages" in paths:
                current.messages = checked.messages
            if "opted_out_channels" in paths:
                current.opted_out_channels = checked.opted_out_channels
            now = store.now()
            row = (
                await session.execute(
                    update(store.users)
                    .where(store.users.c.id == user_id)
                    .values(
                        preferences=current.to_json(),
                        preferences_update_time=now,
                        update_time=now,
                        version=row.version + 1,
                    )
                    .returning(store.users)
                )
            ).one()
            await self.id.outbox.add(
                session,
                _snapshot(
                    events_pb2.UserUpdated,
                    row,
                    status=enum_value(resources_pb2.UserStatus, row.status),
                    update_time=timestamp(now),
                ),
                aggregate_id=str(row.id),
            )
        return pb.UpdateNotificationPreferencesResponse(notification_preferences=preferences_message(row))

    # -- sessions -------------------------------------------------------------------------------
    async def Login(self, request, context):
        if not request.email.strip():
            raise InvalidArgument("email", "is required")
        if not request.password:
            raise InvalidArgument("password", "is required")
        key = domain.email_key(request.email)
        sessions, passwords = self.id.sessions, self.id.passwords
        async with self.db.sessions() as session:
            row = await store.user_by_email_key(session, key)
        locked = await sessions.locked(key)
        usable = row is not None and row.status == "ACTIVE" and not locked
        if not await passwords.verify(row.password_hash if usable else None, request.password):
            if not locked:
                await sessions.record_failure(key)
            raise Unauthenticated(INVALID_LOGIN)
        await sessions.clear_failures(key)
        if passwords.needs_rehash(row.password_hash):
            await self._rehash(row.id, request.password)
        user_session, jti = await sessions.start(str(row.id), row.role)
        tokens = self.id.tokens
        return pb.LoginResponse(
            access_token=tokens.access_token(str(row.id), row.role, user_session.sid),
            token_type="Bearer",  # noqa: S106 - the OAuth token type
            expires_in=tokens.access_seconds,
            refresh_token=tokens.refresh_token(
                str(row.id), row.role, user_session.sid, jti, sessions.refresh_expiry(user_session)
            ),
            refresh_token_expire_time=timestamp(_utc(sessions.refresh_expiry(user_session))),
            user=user_message(row),
        )

    async def _rehash(self, user_id, password: str) -> None:
        new_hash = await self.id.passwords.hash(password)
        async with self.db.transaction() as session:
            await session.execute(
                update(store.users).where(store.users.c.id == user_id).values(password_hash=new_hash)
            )

    async def Refresh(self, request, context):
        if not request.refresh_token:
            raise InvalidArgument("refresh_token", "is required")
        claims = await self.id.refresh_verifier.verify(
            request.refresh_token, token_type=REFRESH_TOKEN_TYPE, audience=self.id.tokens.refresh_audience
        )
        sessions = self.id.sessions
        user_session = await sessions.get(claims["sid"])
        if user_session is None:
            raise Unauthenticated("the session has ended: sign in again")
        outcome, jti = await sessions.rotate(user_session, claims.get("jti", ""))
        if outcome is Rotation.REUSED:
            raise Unauthenticated(
                "this refresh token was already used; the session has been ended for safety"
            )
        if outcome is not Rotation.ROTATED:
            raise Unauthenticated("the session has ended: sign in again")
        tokens, expiry = self.id.tokens, sessions.refresh_expiry(user_session)
        user_id, role, sid = user_session.user_id, user_session.role, user_session.sid
        return pb.RefreshResponse(
            access_token=tokens.access_token(user_id, role, sid),
            token_type="Bearer",  # noqa: S106 - the OAuth token type
            expires_in=tokens.access_seconds,
            refresh_token=tokens.refresh_token(user_id, role, sid, jti, expiry),
            refresh_token_expire_time=timestamp(_utc(expiry)),
        )

    async def Logout(self, request, context):
        me = auth.caller()
        await self.id.sessions.end(me.session_id, me.user_id)
        self.id.session_check.forget(me.session_id)
        return pb.LogoutResponse()

    # -- keys -----------------------------------------------------------------------------------
    async def GetJwks(self, request, context):
        return pb.GetJwksResponse(keys=[pb.JsonWebKey(**jwk) for jwk in self.id.keys.published()])

    async def RotateSigningKey(self, request, context):
        auth.require_role(Role.ADMIN)
        key = await self.id.keys.rotate()
        return pb.RotateSigningKeyResponse(
            key=pb.JsonWebKey(**key.jwk), signing_start_time=timestamp(key.signing_start)
        )


def _utc(unix_time: float) -> datetime:
    return datetime.fromtimestamp(unix_time, UTC)
