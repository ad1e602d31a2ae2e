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


def small_tmpfs(parent: Path, options: str) -> Iterator[Path]:
    """A small tmpfs mounted under ``parent`` (``options``: ``size=2m,nr_inodes=64``...), for
    full-disk tests; unmounted afterwards. Root can mount one: elsewhere the tests skip with
    the reason, and in CI (which runs as root) they fail instead of proving nothing."""
    import os
    import subprocess

    import pytest

    mnt = parent / "tiny"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        why = (f"cannot mount a small tmpfs here ({p.stderr.strip() or p.returncode}): "
               "the full-disk tests need root or CAP_SYS_ADMIN")
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


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
