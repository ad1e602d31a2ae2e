"""Times read from outside: one parser for RFC 3339 / ISO 8601, always UTC; and the times
modelseal writes (``rfc3339``, ``created_time``)."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from modelseal.errors import InputError


def parse_time(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 time, as UTC."""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
        # an extreme offset ("0001-01-01T00:00:00+23:59") overflows the conversion to UTC
        return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    except (ValueError, AttributeError, OverflowError) as e:
        raise InputError(f"{text!r} is not an RFC 3339 time") from e


def rfc3339(ts: datetime) -> str:
    """``ts`` as RFC 3339 in UTC, to the second (``2024-01-02T03:04:05Z``)."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def created_time() -> datetime:
    """Now, or ``SOURCE_DATE_EPOCH`` for reproducible builds."""
    sde = os.environ.get("SOURCE_DATE_EPOCH")
    if sde and sde.isdigit():
        return datetime.fromtimestamp(int(sde), UTC)
    return datetime.now(UTC)
