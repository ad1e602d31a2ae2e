"""Durable file-system steps: fsync what is published, write atomically, and find what an
interrupted run left behind (temporary names carry the owner's PID).

A rename publishes a file only once both the file's data and the directory entry are on disk:
``fsync(file)`` before the rename, ``fsync(directory)`` after it. Without the first, a power
loss can leave a published name pointing at an empty or partial file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from modelseal.errors import DiskFullError, UnsafePathError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make the entries of directory ``path`` (renames, creations, removals) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as e:  # some file systems cannot fsync a directory; nothing more to do
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def owner_tag() -> str:
    """The part of a temporary name that says which process owns it: ``<pid>``."""
    return str(os.getpid())


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists (on this host and in this PID namespace)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


_OWNED = re.compile(r"([0-9]{1,10})-[a-z0-9_]{8}")


def owner_pid(name: str, prefix: str) -> int | None:
    """The PID in a temporary name ``<prefix><pid>-<8 random characters>`` (as mkstemp and
    mkdtemp make them); None if it is not exactly one."""
    if not name.startswith(prefix):
        return None
    m = _OWNED.fullmatch(name, len(prefix))
    return int(m.group(1)) if m else None


def disk_full_error(path: str | os.PathLike[str], e: OSError,
                    needed: int | None = None) -> DiskFullError:
    """The error for ENOSPC/EDQUOT while writing ``path``: names the path and the space."""
    need = f"; {needed:,} bytes are needed" if needed is not None else ""
    what = "no space or inodes left" if e.errno == errno.ENOSPC else "disk quota exceeded"
    return DiskFullError(f"cannot write {path}: {what} on that file system{need}",
                         hint="free space (or inodes) there, or choose another directory")


@contextlib.contextmanager
def atomic_writer(dest: str | os.PathLike[str], *, mode: int = 0o644,
                  tmp_prefix: str = ".tmp-", needed: int | None = None) -> Iterator[BinaryIO]:
    """Stream a file into place all or nothing: the file handed out is a temporary one beside
    ``dest`` (``<tmp_prefix><pid>-<random>``, so ``remove_stale`` finds it if we are killed);
    when the block ends without an exception it is flushed, fsynced, given ``mode``, renamed
    over ``dest`` and the directory fsynced. On an exception the temporary file is removed and
    ``dest`` is untouched; running out of space is a DiskFullError naming ``dest`` (and
    ``needed`` bytes when known)."""
    target = Path(dest)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f"{tmp_prefix}{owner_tag()}-")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before its name is published
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in NO_SPACE:
            raise disk_full_error(target, e, needed) from e
        raise
    fsync_dir(target.parent)


def atomic_write(dest: str | os.PathLike[str], data: bytes, *, mode: int = 0o644,
                 tmp_prefix: str = ".tmp-") -> Path:
    """Write ``data`` to ``dest`` all or nothing (``atomic_writer`` with the bytes at hand)."""
    with atomic_writer(dest, mode=mode, tmp_prefix=tmp_prefix, needed=len(data)) as f:
        f.write(data)
    return Path(dest)


def remove_stale(directory: Path, prefix: str) -> list[Path]:
    """Remove entries ``<prefix><pid>-...`` of ``directory`` whose owner process is gone
    (files or whole trees); returns what was removed."""
    import shutil

    removed: list[Path] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        pid = owner_pid(name, prefix)
        if pid is None or pid_alive(pid):
            continue
        p = directory / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        if not p.exists():
            removed.append(p)
    return removed


def safe_relpath(path: str, what: str = "layer path") -> str:
    """``path`` if it is a safe relative ``/``-separated path inside a root (a layer's
    filepath, a file of a model_signing manifest); else UnsafePathError naming ``what``.

    Refused: empty, NUL, not UTF-8, absolute (``/x``, ``C:x``, a backslash), and ``..``,
    ``.`` or empty components (``a//b``, ``a/``), which would make two names for one file."""
    if not isinstance(path, str) or not path or "\x00" in path:
        raise UnsafePathError(f"{what} {path!r} is empty or contains NUL: refused")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError as e:  # a non-UTF-8 file name, decoded with surrogateescape
        raise UnsafePathError(f"{what} {path!r} is not valid UTF-8: refused") from e
    if path.startswith("/") or "\\" in path or (len(path) > 1 and path[1] == ":"):
        raise UnsafePathError(f"{what} {path!r} is absolute: refused")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UnsafePathError(f"{what} {path!r} contains '..', '.' or an empty component: "
                              "refused")
    return path
