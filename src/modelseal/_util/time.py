"""Times read from outside: one parser for RFC 3339 / ISO 8601, always UTC."""

from __future__ import annotations

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
