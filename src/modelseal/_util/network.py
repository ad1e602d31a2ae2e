"""Process-wide network limits and cancellation (stdlib only: the CLI imports it on every run).

- ``configure(timeout=, deadline=)``: the connect/read timeout of every registry request and
  an optional bound on the whole command (``--timeout`` / ``MODELSEAL_TIMEOUT``,
  ``--deadline`` / ``MODELSEAL_DEADLINE``; docs/network.md).
- ``cancel()``: what Ctrl-C and SIGTERM do besides raising KeyboardInterrupt in the main
  thread: set an event that worker threads check between blocks and while backing off, and
  shut down every open registry connection so that a thread blocked in a read wakes up now,
  not when its read timeout expires.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

DEFAULT_TIMEOUT = 30.0
"""Seconds a request may wait to connect, and for each read (headers or the next block)."""


class Interrupted(KeyboardInterrupt):
    """Raised in worker threads once the command was interrupted (Ctrl-C, SIGTERM)."""


@dataclass(frozen=True)
class Limits:
    """``timeout``: connect and read timeout per request (seconds); ``deadline``: bound on the
    whole command in seconds from when it was configured, or None for no bound."""

    timeout: float = DEFAULT_TIMEOUT
    deadline: float | None = None
    started: float = 0.0  # time.monotonic() when configured

    def remaining(self) -> float | None:
        """Seconds left before the deadline (may be negative), or None without a deadline."""
        if self.deadline is None:
            return None
        return self.started + self.deadline - time.monotonic()


_limits = Limits(started=time.monotonic())
CANCELLED = threading.Event()
_closers: list[Callable[[], None]] = []


def configure(timeout: float | None = None, deadline: float | None = None) -> Limits:
    """Set the limits for this process (None keeps the default); returns them."""
    global _limits
    _limits = Limits(timeout if timeout and timeout > 0 else DEFAULT_TIMEOUT,
                     deadline if deadline and deadline > 0 else None, time.monotonic())
    return _limits


def limits() -> Limits:
    """The limits in force."""
    return _limits


def add_closer(fn: Callable[[], None]) -> None:
    """Register ``fn`` to run on :func:`cancel` (it shuts down open connections)."""
    _closers.append(fn)


def cancel() -> None:
    """Interrupt the network work of this process. Safe to call from a signal handler:
    the closers run on a helper thread, so the handler never waits on a lock."""
    CANCELLED.set()

    def run() -> None:
        for fn in list(_closers):
            with contextlib.suppress(Exception):  # best effort while shutting down
                fn()

    threading.Thread(target=run, name="modelseal-cancel", daemon=True).start()


def cancelled() -> bool:
    """True once :func:`cancel` was called."""
    return CANCELLED.is_set()


def check_cancelled() -> None:
    """Raise :class:`Interrupted` when the command was interrupted."""
    if CANCELLED.is_set():
        raise Interrupted()


def sleep(seconds: float) -> None:
    """Back off for ``seconds``, waking at once (with Interrupted) when cancelled."""
    if CANCELLED.wait(max(0.0, seconds)):
        raise Interrupted()


def reset() -> None:
    """Forget a cancellation (tests running commands in one process)."""
    CANCELLED.clear()


_SCOPE = threading.local()


@contextlib.contextmanager
def stop_when(event: threading.Event) -> Iterator[None]:
    """While in this block, this thread's registry requests and transfers stop (``Stopped``)
    before each request and between blocks once ``event`` is set: the workers of a push, pull
    or copy stop promptly when one of their siblings failed (upload sessions cancelled)."""
    previous = getattr(_SCOPE, "event", None)
    _SCOPE.event = event
    try:
        yield
    finally:
        _SCOPE.event = previous


def check_stopped() -> None:
    """Raise ``Stopped`` when this thread's :func:`stop_when` event is set."""
    event = getattr(_SCOPE, "event", None)
    if event is not None and event.is_set():
        from modelseal.errors import Stopped

        raise Stopped("stopped: another transfer of this operation failed")


def check_limits() -> None:
    """Between blocks of a transfer, or for a thread waiting on one: stop when interrupted
    (Interrupted), when a sibling failed (:func:`stop_when`), or past the deadline
    (RegistryTimeoutError)."""
    check_cancelled()
    check_stopped()
    left = _limits.remaining()
    if left is not None and left <= 0:
        from modelseal.errors import RegistryTimeoutError

        raise RegistryTimeoutError(f"gave up: the command ran past its deadline of "
                                   f"{_limits.deadline:g} s",
                                   hint="raise --deadline (MODELSEAL_DEADLINE)")
