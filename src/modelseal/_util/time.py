"""The one time module: reading and writing RFC 3339 times (always UTC), now, durations, and
the clock skew a signed time may have.

Every time modelseal writes is ``YYYY-MM-DDTHH:MM:SSZ`` (``rfc3339``), the one date format
in-toto layouts accept; every time it reads goes through ``parse_time``."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta

from modelseal.errors import InputError, UsageError

CLOCK_SKEW = timedelta(minutes=5)
"""How far in the future a signed time may be: clocks of signers and verifiers differ by a
little, never by more (docs/threat-model.md). A later time is refused, not believed: it would
keep an attestation young for ever."""

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 time, as UTC."""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
        # an extreme offset ("0001-01-01T00:00:00+23:59") overflows the conversion to UTC
        return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    except (ValueError, AttributeError, OverflowError) as e:
        raise InputError(f"{text!r} is not an RFC 3339 time") from e


def rfc3339(t: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` in UTC (a naive time is taken as UTC): the one format
    modelseal writes times in."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now() -> datetime:
    """Current time in UTC, second precision (what predicates and records carry)."""
    return datetime.now(UTC).replace(microsecond=0)


def created_time() -> datetime:
    """Now, or ``SOURCE_DATE_EPOCH`` for reproducible builds (creation times of artifacts)."""
    sde = os.environ.get("SOURCE_DATE_EPOCH")
    if sde and sde.isdigit():
        return datetime.fromtimestamp(int(sde), UTC)
    return datetime.now(UTC)


def parse_duration(text: str | int | float) -> timedelta:
    """``90d``, ``12h``, ``2w``, ``30m``, ``45s`` (or a number of seconds)."""
    if isinstance(text, bool):
        raise UsageError(f"duration {text!r} is not a duration")
    if isinstance(text, (int, float)):
        return timedelta(seconds=float(text))
    m = _DURATION.match(str(text))
    if not m:
        raise UsageError(f"duration {text!r} is not of the form NUMBER[s|m|h|d|w], e.g. 90d")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
