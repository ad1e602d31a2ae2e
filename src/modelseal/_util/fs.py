"""File-system steps: fsync what is published, write atomically, find what an interrupted run
left behind (temporary names carry the owner's PID), and walk a model or dataset directory.

A rename publishes a file only once both the file's data and the directory entry are on disk:
``fsync(file)`` before the rename, ``fsync(directory)`` after it. Without the first, a power
loss can leave a published name pointing at an empty or partial file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from modelseal.errors import DiskFullError, InputError, UnsafePathError

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


# ---- walking a model or dataset directory: one walker, one exclude policy -------------------

DEFAULT_EXCLUDES: tuple[str, ...] = (".git", ".modelseal", "__pycache__", "*.pyc", ".DS_Store")
"""gitignore-style patterns every walk of a model or dataset directory leaves out by default
(`run`, `attest`, `push`, `bom`, `scan`, provenance's datasets).

One set, so that what `run` records as a step's products is exactly what `push` packages (a
``__pycache__`` packaged but not recorded would fail verification) and a dataset directory has
one digest in provenance and in the BOM. ``.modelseal`` holds the attestations `run` writes.
``--exclude`` adds to it, ``--no-default-excludes`` drops it.
"""


class PathExcluder:
    """gitignore-style matching of '/'-separated paths relative to the walked root."""

    def __init__(self, patterns: Sequence[str]) -> None:
        import pathspec

        self._spec = pathspec.GitIgnoreSpec.from_lines(list(patterns)) if patterns else None

    def file(self, rel: str) -> bool:
        """True when the file at ``rel`` is excluded."""
        return self._spec is not None and self._spec.match_file(rel)

    def dir(self, rel: str) -> bool:
        """True when the directory at ``rel`` is excluded (patterns ending in '/' included)."""
        return self._spec is not None and (self._spec.match_file(rel)
                                           or self._spec.match_file(rel + "/"))


def exclude_patterns(exclude: Sequence[str] = (), *, default_excludes: bool = True) -> list[str]:
    """The patterns a walk uses: the defaults (unless dropped) and then the user's."""
    return [*(DEFAULT_EXCLUDES if default_excludes else ()), *exclude]


@dataclass(frozen=True)
class WalkedFile:
    """A regular file found by :func:`walk_files`."""

    relpath: str  # '/'-separated, relative to the walked root
    path: Path  # on disk (for a followed link: the link, whose content is its target's)
    size: int


def _special_kind(mode: int) -> str:
    if stat.S_ISBLK(mode) or stat.S_ISCHR(mode):
        return "device file"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    return "socket" if stat.S_ISSOCK(mode) else "special file"


def walk_files(root: str | os.PathLike[str], *,
               exclude: Sequence[str] = DEFAULT_EXCLUDES,
               follow_symlinks: bool = False,
               prefix: str = "",
               excluded: list[str] | None = None) -> list[WalkedFile]:
    """Every regular file below ``root`` that the gitignore-style ``exclude`` patterns keep,
    sorted by relative path: the one walk of a model or dataset directory.

    The policy (docs/format.md "Walking a directory"):

    - Symbolic links are refused, naming the link, unless ``follow_symlinks``; then a link is
      followed only when it resolves to a file or directory *inside* ``root`` (the file is
      recorded under the link's name with its target's content). A link out of ``root``, a
      broken link and a link back to a parent directory (a loop) are refused: a walk never
      reads outside the tree it describes, and a pulled model (which has no links) walks the
      same as its source.
    - Device files, FIFOs and sockets are refused (reading one would block or mean nothing);
      so is an unreadable file or directory.
    - Excluded directories are not entered. ``prefix`` is prepended to every relative path
      (``"data/"`` when ``root`` is recorded as ``data``, as ``run`` records materials), and
      patterns match the path with it. ``excluded`` (a list) receives the top-most excluded
      paths.
    """
    base = Path(root)
    try:
        st = base.stat()
    except OSError as e:
        raise InputError(f"cannot read {base}: {e.strerror or e}") from e
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{base} is not a directory")
    real_root = base.resolve()
    ex = PathExcluder(exclude)
    files: list[WalkedFile] = []

    def refuse_link(rel: str, target: Path | None) -> None:
        if not follow_symlinks:
            raise InputError(
                f"{prefix}{rel} is a symbolic link: modelseal records file content only",
                hint="replace the link by the file, or follow links that stay inside the "
                     "directory (--follow-symlinks)")
        if target is None:
            raise InputError(f"{prefix}{rel} is a broken symlink or a symlink loop")
        if not target.is_relative_to(real_root):
            raise InputError(f"{prefix}{rel} is a symbolic link to {target}, outside "
                             f"{base}: refused")

    def walk(d: Path, rel: str, ancestors: tuple[tuple[int, int], ...]) -> None:
        try:
            dst = d.stat()
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            raise InputError(f"cannot read directory {d}: {e.strerror or e}") from e
        ident = (dst.st_dev, dst.st_ino)
        if ident in ancestors:
            raise InputError(f"symlink loop: {prefix}{rel.rstrip('/')} leads back to one of its "
                             "parent directories")
        ancestors = (*ancestors, ident)
        for entry in entries:
            r = f"{rel}{entry.name}"
            p = Path(entry.path)
            try:
                is_dir = entry.is_dir()  # follows a link, so an excluded link is never judged
            except OSError:
                is_dir = False
            if ex.dir(prefix + r) if is_dir else ex.file(prefix + r):
                if excluded is not None:
                    excluded.append(prefix + r)
                continue
            if entry.is_symlink():
                try:
                    target: Path | None = p.resolve(strict=True)
                except (OSError, RuntimeError):
                    target = None
                refuse_link(r, target)
            try:
                est = p.stat()  # follows a link only when refuse_link let it through
            except OSError as e:
                raise InputError(f"cannot read {prefix}{r}: {e.strerror or e}") from e
            if stat.S_ISDIR(est.st_mode):
                walk(p, r + "/", ancestors)
            elif stat.S_ISREG(est.st_mode):
                if not os.access(p, os.R_OK):
                    raise InputError(f"cannot read {prefix}{r}: not readable (permission denied)")
                files.append(WalkedFile(prefix + r, p, est.st_size))
            else:
                raise InputError(f"{prefix}{r} is a {_special_kind(est.st_mode)}: only regular "
                                 "files are recorded")

    walk(base, "", ())
    files.sort(key=lambda f: f.relpath)
    return files
