"""The UserManagementService servicer: it reads each request into domain values, hands them with
the caller to the use case (accounts.py, preferences.py, logins.py, keys.py) and turns the answer
into the response. No rules and no queries here."""

from __future__ import annotations

from clinic.user_management.v1 import resources_pb2
from clinic.user_management.v1 import user_management_service_pb2 as pb
from clinic.user_management.v1 import user_management_service_pb2_grpc as rpc
from clinic_platform import auth
from clinic_platform.auth import Role
from clinic_platform.convert import enum_name, from_date, mask_paths, parse_enum, parse_uuid, timestamp
from clinic_platform.errors import InvalidArgument
from clinic_platform.pagination import page_request
from user_management import domain, messages
from user_management.accounts import Accounts, UserChange
from user_management.domain import Preferences, Profile
from user_management.keys import KeyRing
from user_management.logins import Grant, Logins
from user_management.preferences import NotificationPreferences

PREFERENCE_FIELDS = {"messages", "opted_out_channels"}


def _role(value: int, field: str) -> Role:
    if value == resources_pb2.ROLE_UNSPECIFIED:
        raise InvalidArgument(field, "is required")
    return Role(enum_name(resources_pb2.Role, value))


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


def _user_change(user: resources_pb2.User, paths: set[str]) -> UserChange:
    role = _role(user.role, "user.role") if "role" in paths else None
    status = None
    if "status" in paths:
        status = parse_enum(
            resources_pb2.UserStatus, resources_pb2.UserStatus.Name(user.status), "user.status"
        )
    return UserChange(role, status, _profile(user))


def _preferences(request: pb.UpdateNotificationPreferencesRequest) -> tuple[set[str], Preferences]:
    paths = mask_paths(request.update_mask, PREFERENCE_FIELDS)
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
    return paths, checked


def _tokens(grant: Grant) -> dict:
    return {
        "access_token": grant.access_token,
        "token_type": "Bearer",  # the OAuth token type
        "expires_in": grant.expires_in,
        "refresh_token": grant.refresh_token,
        "refresh_token_expire_time": timestamp(grant.refresh_expire_time),
    }


class UserManagementApi(rpc.UserManagementServiceServicer):
    def __init__(
        self,
        accounts: Accounts,
        preferences: NotificationPreferences,
        logins: Logins,
        keys: KeyRing,
    ) -> None:
        self.accounts = accounts
        self.preferences = preferences
        self.logins = logins
        self.keys = keys

    # -- accounts -------------------------------------------------------------------------------
    async def Register(self, request, context):
        birth = from_date(request.birth_date, "birth_date")
        profile = Profile(
            request.email, request.given_name, request.family_name, "", request.phone_number, birth
        )
        return await self.accounts.register(profile, request.password, request, pb.RegisterResponse)

    async def CreateUser(self, request, context):
        me = auth.caller()
        role = _role(request.user.role, "user.role")
        return await self.accounts.create(
            me,
            role,
            lambda: _profile(request.user),
            password=request.password,
            request=request,
            response_type=pb.CreateUserResponse,
        )

    async def GetCurrentUser(self, request, context):
        me = auth.caller()
        return pb.GetCurrentUserResponse(user=messages.user(await self.accounts.get(me, me.user_id)))

    async def GetUser(self, request, context):
        user_id = parse_uuid(request.user_id, "user_id")
        account = await self.accounts.get(auth.caller(), user_id)
        return pb.GetUserResponse(user=messages.user(account))

    async def ListUsers(self, request, context):
        me = auth.caller()
        role = parse_enum(resources_pb2.Role, request.role, "role") if request.role else None
        page = page_request(
            request.page_size, request.page_token, {"role": role, "query": request.query}, maximum=200
        )
        accounts, next_token = await self.accounts.list_users(
            me, role=role, query=request.query.strip(), page=page
        )
        return pb.ListUsersResponse(users=[messages.user(a) for a in accounts], next_page_token=next_token)

    async def UpdateUser(self, request, context):
        me = auth.caller()
        user_id = parse_uuid(request.user_id, "user_id")
        paths = mask_paths(request.update_mask, domain.ADMIN_FIELDS)
        account = await self.accounts.update(me, user_id, paths, lambda: _user_change(request.user, paths))
        return pb.UpdateUserResponse(user=messages.user(account))

    async def DeactivateUser(self, request, context):
        user_id = parse_uuid(request.user_id, "user_id")
        account = await self.accounts.deactivate(auth.caller(), user_id)
        return pb.DeactivateUserResponse(user=messages.user(account))

    # -- notification preferences ---------------------------------------------------------------
    async def GetNotificationPreferences(self, request, context):
        user_id = parse_uuid(request.user_id, "user_id")
        account = await self.preferences.get(auth.caller(), user_id)
        return pb.GetNotificationPreferencesResponse(notification_preferences=messages.preferences(account))

    async def UpdateNotificationPreferences(self, request, context):
        user_id = parse_uuid(request.user_id, "user_id")
        account = await self.preferences.update(auth.caller(), user_id, lambda: _preferences(request))
        return pb.UpdateNotificationPreferencesResponse(
            notification_preferences=messages.preferences(account)
        )

    # -- sessions -------------------------------------------------------------------------------
    async def Login(self, request, context):
        account, grant = await self.logins.login(request.email, request.password)
        return pb.LoginResponse(**_tokens(grant), user=messages.user(account))

    async def Refresh(self, request, context):
        return pb.RefreshResponse(**_tokens(await self.logins.refresh(request.refresh_token)))

    async def Logout(self, request, context):
        await self.logins.logout(auth.caller())
        return pb.LogoutResponse()

    # -- signing keys ---------------------------------------------------------------------------
    async def GetJwks(self, request, context):
        return pb.GetJwksResponse(keys=[pb.JsonWebKey(**jwk) for jwk in self.keys.published()])

    async def RotateSigningKey(self, request, context):
        auth.require_role(Role.ADMIN)
        key = await self.keys.rotate()
        return pb.RotateSigningKeyResponse(
            key=pb.JsonWebKey(**key.jwk), signing_start_time=timestamp(key.signing_start)
        )
