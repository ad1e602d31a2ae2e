"""Where the shared test data lives: ``../shared/testdata`` beside the repository checkout."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO.parent / "shared" / "testdata"
if not TESTDATA.is_dir():  # a checkout elsewhere on this workplace's machines
    TESTDATA = Path("/work/shared/testdata")
SIGSTORE = TESTDATA / "sigstore"
MODELPACK_SCHEMA = TESTDATA / "modelpack" / "config-schema.json"


def missing_tool(what: str) -> None:
    """A real part the tests need is not installed: skip on a developer's machine, fail in CI
    (where scripts/test.sh installs it, so its absence is a broken setup, not a reason)."""
    import os

    import pytest

    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing in CI: scripts/test.sh should have installed it")
    pytest.skip(reason=f"{what} not installed (bash scripts/test.sh installs it)")


class _Server(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=_Server)


def running(make: Callable[[], S], *tools: str) -> Iterator[S]:
    """The body of every real-server fixture: check that ``tools`` are installed (else
    ``missing_tool``), start ``make()``, yield it, and stop it however the test ends."""
    import shutil

    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        missing_tool(" / ".join(missing))
    server = make()
    server.start()
    try:
        yield server
    finally:
        server.stop()
