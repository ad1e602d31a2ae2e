"""The shared helpers under every module (_util): one atomic write, one ``safe_relpath``, one
time format, one canonical JSON. Each is the only implementation of its concept, so these
tests guard every caller at once."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from modelseal._util.fs import atomic_write, atomic_writer, safe_relpath
from modelseal._util.json import canonical_json
from modelseal._util.time import parse_duration, parse_time, rfc3339
from modelseal.errors import InputError, UnsafePathError, UsageError


def test_a_write_interrupted_halfway_leaves_the_old_file_and_no_temporary(
        tmp_path: Path) -> None:
    dest = tmp_path / "layout.json"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_writer(dest) as f:
        f.write(b"new, but only half")
        raise RuntimeError("killed mid-write")
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layout.json"]


def test_an_atomic_write_publishes_whole_files_with_their_mode(tmp_path: Path) -> None:
    dest = atomic_write(tmp_path / "blob", b"data", mode=0o444, tmp_prefix=".t-")
    assert dest.read_bytes() == b"data"
    assert dest.stat().st_mode & 0o777 == 0o444
    with atomic_writer(tmp_path / "stream", mode=0o600) as f:
        for chunk in (b"a", b"b", b"c"):
            f.write(chunk)
    assert (tmp_path / "stream").read_bytes() == b"abc"
    assert (tmp_path / "stream").stat().st_mode & 0o777 == 0o600
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


@pytest.mark.parametrize("path", [
    "", "/etc/passwd", "../escape", "a/../../b", "a/./b", "a//b", "a/", "./a", "C:evil",
    "a\\..\\b", "nul\x00byte", "bad-\udcff-utf8",
])
def test_safe_relpath_refuses_paths_that_escape_or_alias(path: str) -> None:
    with pytest.raises(UnsafePathError):
        safe_relpath(path, "model file")


def test_safe_relpath_keeps_ordinary_relative_paths() -> None:
    for path in ("model.safetensors", "a/b/c.json", "..hidden/x", "a..b"):
        assert safe_relpath(path) == path


def test_an_unsafe_path_is_bad_input() -> None:
    # callers that refuse bad input (exit 2) catch InputError: an unsafe path is one
    assert issubclass(UnsafePathError, InputError)


def test_times_are_written_in_one_format_in_utc() -> None:
    t = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=timezone(timedelta(hours=2)))
    assert rfc3339(t) == "2026-01-02T01:04:05Z"
    assert rfc3339(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"  # naive is UTC
    assert parse_time("2026-01-02T01:04:05Z") == datetime(2026, 1, 2, 1, 4, 5, tzinfo=UTC)
    assert rfc3339(parse_time("2026-01-02T03:04:05+02:00")) == "2026-01-02T01:04:05Z"
    for bad in ("yesterday", "", "0001-01-01T00:00:00+23:59"):
        with pytest.raises(InputError):
            parse_time(bad)


def test_durations() -> None:
    assert parse_duration("90d") == timedelta(days=90)
    assert parse_duration(" 2w ") == timedelta(weeks=2)
    assert parse_duration(30) == timedelta(seconds=30)
    for bad in ("90", "1y", True, "-1d"):
        with pytest.raises(UsageError):
            parse_duration(bad)  # type: ignore[arg-type]


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": ["é", {"d": None, "c": True}]}) == (
        '{"a":["é",{"c":true,"d":null}],"b":1}'.encode())
