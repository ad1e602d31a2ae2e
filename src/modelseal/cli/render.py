"""Rendering for the command line: rich consoles, escaping of untrusted text, JSON output,
errors turned into exit codes (docs/exit-codes.md), progress bars and sizes.

Heavy libraries (rich) load inside the functions so that importing this module stays cheap.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click


def console(stderr: bool = False) -> Any:
    """A rich console; wide when output goes to a file or pipe, so digests stay whole."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 200
    return Console(stderr=stderr, highlight=False, width=width)


# Terminal control characters (ESC sequences can conceal text or move the cursor; CR can
# overwrite a line) and bidirectional overrides (which reorder what is shown): from
# untrusted text they are shown as \xNN / \uNNNN escapes. Newline and tab stay.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _visible(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def escape(text: str) -> str:
    """``text`` (a path, a digest, anything from a registry or a file) made safe to print
    with rich: shown as written, never interpreted as markup or as terminal control."""
    from rich.markup import escape as rich_escape

    return rich_escape(_UNPRINTABLE.sub(_visible, text))


def emit_json(obj: Any) -> None:
    """Print ``obj`` as indented, key-sorted JSON on stdout (``--json`` output)."""
    click.echo(json.dumps(obj, indent=2, sort_keys=True))


def note(msg: str) -> None:
    """A line for the person on stderr (stdout stays for data and ``--json``)."""
    click.echo(msg, err=True)


@contextmanager
def errors_to_exit(json_mode: bool = False) -> Iterator[None]:
    """Turn modelseal's errors into a message on stderr and the error's exit code."""
    from modelseal.errors import ModelsealError

    try:
        yield
    except ModelsealError as e:
        if json_mode:
            click.echo(json.dumps({"error": e.message, "hint": e.hint,
                                   "type": type(e).__name__,
                                   "reasons": getattr(e, "reasons", [e.message])}), err=True)
        else:
            err = console(stderr=True)
            err.print(f"[bold red]error:[/] {escape(e.message)}", soft_wrap=True)
            for reason in getattr(e, "reasons", []):
                if reason != e.message:
                    err.print(f"  - {escape(reason)}", soft_wrap=True)
            if e.hint:
                err.print(f"  hint: {escape(e.hint)}", soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


def make_progress(json_mode: bool) -> Any:
    """A rich progress bar on a terminal; nothing in --json mode or when piped."""
    from modelseal.transfer import Progress

    if json_mode or not sys.stderr.isatty():
        return Progress()
    return RichProgress()


class RichProgress:
    """Byte progress bars for hashing and transfers (thread-safe advance)."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._p = Progress(TextColumn("{task.description:>11}"), BarColumn(), DownloadColumn(),
                           TransferSpeedColumn(), TimeRemainingColumn(),
                           console=console(stderr=True), transient=True)
        self._task: Any = None

    def start(self, label: str, total: int) -> Callable[[int], None]:
        self._p.start()
        task = self._task = self._p.add_task(label, total=total)
        return lambda n: self._p.advance(task, n)

    def finish(self) -> None:
        self._p.stop()


def human_size(n: float) -> str:
    """``n`` bytes as B, KiB, MiB, GiB or TiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
