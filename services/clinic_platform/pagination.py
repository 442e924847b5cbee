"""List pagination per AIP-158: `page_size` (0 = default, capped at a maximum, negative is an
error) and an opaque `page_token` holding a keyset position.

A token remembers a fingerprint of the filters it was issued for; reusing it with other filters
is INVALID_ARGUMENT, as is a token that is not one of ours. Tokens are not secret: every query
is still filtered by what the caller may see, so a crafted token can only skip rows.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Table, select

from clinic_platform.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class Page:
    size: int
    after: list[Any] | None  # keyset position: the sort key of the last row of the previous page
    filters_fingerprint: str

    def next_token(self, last_key: list[Any] | tuple[Any, ...]) -> str:
        raw = json.dumps({"after": [str(v) for v in last_key], "filters": self.filters_fingerprint})
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def take(self, rows: list[Any], key: Callable[[Any], list[Any]]) -> tuple[list[Any], str]:
        """This page of `rows` (fetched with limit size + 1) and the token of the next, or ""."""
        if len(rows) <= self.size:
            return rows, ""
        rows = rows[: self.size]
        return rows, self.next_token(key(rows[-1]))


def _fingerprint(filters: dict[str, Any]) -> str:
    canonical = json.dumps(filters, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def page_request(
    page_size: int,
    page_token: str,
    filters: dict[str, Any] | None = None,
    *,
    default: int = DEFAULT_PAGE_SIZE,
    maximum: int = MAX_PAGE_SIZE,
) -> Page:
    if page_size < 0:
        raise InvalidArgument("page_size", "must not be negative")
    size = min(page_size or default, maximum)
    fingerprint = _fingerprint(filters or {})
    if not page_token:
        return Page(size, None, fingerprint)
    try:
        padded = page_token + "=" * (-len(page_token) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after, issued_for = decoded["after"], decoded["filters"]
        if not isinstance(after, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument("page_token", "is not a page token this list issued") from None
    if issued_for != fingerprint:
        raise InvalidArgument("page_token", "was issued for other filters; start again without it")
    return Page(size, after, fingerprint)


def newest_first(table: Table, page: Page, *conditions) -> Select:
    """One page of `table` rows matching `conditions`, newest first by (create_time, id); read the
    page with `page.take(rows, newest_first_key)`."""
    query = select(table).where(*conditions)
    if page.after:
        after_time, after_id = datetime.fromisoformat(page.after[0]), page.after[1]
        query = query.where(
            (table.c.create_time < after_time)
            | ((table.c.create_time == after_time) & (table.c.id < after_id))
        )
    return query.order_by(table.c.create_time.desc(), table.c.id.desc()).limit(page.size + 1)


def newest_first_key(row) -> list[Any]:
    return [row.create_time.isoformat(), row.id]
