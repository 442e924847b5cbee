"""One database and one login role per service, on the embedded or an external PostgreSQL.

Each role owns its database and no other role may connect to it, so "no service reads another's
tables" holds in the database too, not only by convention.
"""

from __future__ import annotations

import asyncpg


async def provision_databases(admin_url: str, passwords: dict[str, str]) -> None:
    """Create missing roles and databases and (re)set the roles' passwords."""
    conn = await asyncpg.connect(admin_url)
    try:
        roles = {r["rolname"] for r in await conn.fetch("SELECT rolname FROM pg_roles")}
        databases = {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
        for service, secret in passwords.items():
            name = f"clinic_{service}"
            password = secret.replace("'", "''")
            verb = "ALTER" if name in roles else "CREATE"
            await conn.execute(f"{verb} ROLE {name} LOGIN PASSWORD '{password}'")
            if name not in databases:
                await conn.execute(f"CREATE DATABASE {name} OWNER {name}")
                await conn.execute(f"REVOKE ALL ON DATABASE {name} FROM PUBLIC")
    finally:
        await conn.close()


def database_url(service: str, password: str, host: str, port: int) -> str:
    return f"postgresql+asyncpg://clinic_{service}:{password}@{host}:{port}/clinic_{service}"
