"""Sessions in Redis. `session:{sid}` lives while the session does (idle lifetime, renewed by
each refresh, capped by the absolute lifetime); every service checks it on every call, so
deleting it ends the session's tokens everywhere. It also holds the id (`jti`) of the one
refresh token that may be used next; used ones are remembered, and presenting one again ends
the session (a stolen refresh token is worth nothing once its owner has refreshed).

Failed logins are counted per account (by a hash of the email, known or not) to lock it for a
while; the answer stays "invalid email or password" either way.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from enum import Enum

from redis.asyncio import Redis

from clinic_platform.auth import SESSION_KEY

USED_KEY = "session:{sid}:used"
USER_SESSIONS_KEY = "user_sessions:{user_id}"
FAILURES_KEY = "login_failures:{account}"

# Atomic refresh-token rotation: KEYS = session, used set; ARGV = presented jti, new jti, idle
# seconds, absolute deadline (unix time), now (unix time).
ROTATE = """
local current = redis.call('HGET', KEYS[1], 'refresh_jti')
if not current then return 'gone' end
if current == ARGV[1] then
  local ttl = math.min(tonumber(ARGV[3]), tonumber(ARGV[4]) - tonumber(ARGV[5]))
  if ttl <= 0 then redis.call('DEL', KEYS[1], KEYS[2]) return 'gone' end
  redis.call('HSET', KEYS[1], 'refresh_jti', ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  return 'rotated'
end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 'reused'
end
return 'unknown'
"""


class Rotation(Enum):
    ROTATED = "rotated"
    GONE = "gone"  # expired or logged out
    REUSED = "reused"  # an old refresh token came back: the session is now ended
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Session:
    sid: str
    user_id: str
    role: str
    absolute_deadline: float  # unix time


class SessionStore:
    def __init__(
        self,
        redis: Redis,
        *,
        idle_seconds: int,
        absolute_seconds: int,
        max_failures: int,
        lockout_seconds: int,
    ) -> None:
        self.redis = redis
        self.idle_seconds = idle_seconds
        self.absolute_seconds = absolute_seconds
        self.max_failures = max_failures
        self.lockout_seconds = lockout_seconds
        self._rotate = redis.register_script(ROTATE)

    async def start(self, user_id: str, role: str) -> tuple[Session, str]:
        """A new session and the id of its first refresh token."""
        sid, jti = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
        now = time.time()
        session = Session(sid, user_id, role, now + self.absolute_seconds)
        key = SESSION_KEY.format(sid=sid)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "user_id": user_id,
                    "role": role,
                    "refresh_jti": jti,
                    "deadline": str(session.absolute_deadline),
                },
            )
            pipe.expire(key, self.idle_seconds)
            pipe.sadd(USER_SESSIONS_KEY.format(user_id=user_id), sid)
            pipe.expire(USER_SESSIONS_KEY.format(user_id=user_id), self.absolute_seconds)
            await pipe.execute()
        return session, jti

    async def get(self, sid: str) -> Session | None:
        data = await self.redis.hgetall(SESSION_KEY.format(sid=sid))
        if not data:
            return None
        return Session(sid, data[b"user_id"].decode(), data[b"role"].decode(), float(data[b"deadline"]))

    async def rotate(self, session: Session, presented_jti: str) -> tuple[Rotation, str]:
        new_jti = secrets.token_urlsafe(18)
        keys = [SESSION_KEY.format(sid=session.sid), USED_KEY.format(sid=session.sid)]
        args = [presented_jti, new_jti, self.idle_seconds, int(session.absolute_deadline), int(time.time())]
        outcome = Rotation((await self._rotate(keys=keys, args=args)).decode())
        if outcome is Rotation.REUSED:
            await self.redis.srem(USER_SESSIONS_KEY.format(user_id=session.user_id), session.sid)
        return outcome, new_jti

    def refresh_expiry(self, session: Session) -> float:
        return min(time.time() + self.idle_seconds, session.absolute_deadline)

    async def end(self, sid: str, user_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(SESSION_KEY.format(sid=sid), USED_KEY.format(sid=sid))
            pipe.srem(USER_SESSIONS_KEY.format(user_id=user_id), sid)
            await pipe.execute()

    async def end_all(self, user_id: str) -> int:
        """End every session of a user (deactivation); returns how many there were."""
        index = USER_SESSIONS_KEY.format(user_id=user_id)
        sids = [s.decode() for s in await self.redis.smembers(index)]
        keys = [SESSION_KEY.format(sid=s) for s in sids] + [USED_KEY.format(sid=s) for s in sids]
        async with self.redis.pipeline(transaction=True) as pipe:
            if keys:
                pipe.delete(*keys)
            pipe.delete(index)
            await pipe.execute()
        return len(sids)

    # -- lockout --------------------------------------------------------------------------------
    @staticmethod
    def _account(email_key: str) -> str:
        return hashlib.sha256(email_key.encode()).hexdigest()[:32]

    async def locked(self, email_key: str) -> bool:
        failures = await self.redis.get(FAILURES_KEY.format(account=self._account(email_key)))
        return failures is not None and int(failures) >= self.max_failures

    async def record_failure(self, email_key: str) -> None:
        key = FAILURES_KEY.format(account=self._account(email_key))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, self.lockout_seconds)  # the lock lasts this long after the last failure
            await pipe.execute()

    async def clear_failures(self, email_key: str) -> None:
        await self.redis.delete(FAILURES_KEY.format(account=self._account(email_key)))
