"""Push a model directory as a ModelPack artifact; pull one back, safely.

Push uploads blobs first and the manifest last, so a tag never points at a partial artifact,
and never moves an existing tag to other content unless asked (in an ``oci:`` directory the
check and the tag write are one step under the index lock). Pull checks every path before
writing anything, streams each blob into a staging directory beside the target while hashing
it, fsyncs it, and switches the whole tree into place in one step only when everything matched:
whatever stops it (an error, SIGKILL, power loss), the target is the old tree or the new one,
and the next pull into that target cleans up what was left (docs/deployer.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from modelseal._util import network
from modelseal._util.fs import (
    DEFAULT_EXCLUDES,
    NO_SPACE,
    atomic_write,
    disk_full_error,
    fsync_dir,
    owner_tag,
    remove_stale,
    walk_files,
)
from modelseal.digest import DigestCache, hash_files
from modelseal.errors import (
    DiskFullError,
    InputError,
    TagConflictError,
    UnsafePathError,
    UsageError,
)
from modelseal.formats import MANIFEST_V1
from modelseal.modelpack import (
    BuiltArtifact,
    Layer,
    ModelManifest,
    ModelMetadata,
    build_artifact,
    content_key,
    parse_model_manifest,
    with_file_list,
)
from modelseal.oci.image_layout import LayoutStore
from modelseal.oci.store import Descriptor, Store
from modelseal.refs import Ref

if TYPE_CHECKING:
    from securesystemslib.signer import Signer

    from modelseal.attest.attachments import AttachOutcome

_T = TypeVar("_T")
_R = TypeVar("_R")


class Progress:
    """Hooks the CLI uses to draw progress bars; the default does nothing."""

    def start(self, label: str, total: int) -> Callable[[int], None]:
        """Begin a phase of ``total`` bytes; returns the advance callback (thread-safe)."""
        return lambda n: None

    def finish(self) -> None:
        """End the current phase."""


def run_stopping_on_failure(fn: Callable[[_T], _R], items: Sequence[_T],
                            workers: int) -> list[_R]:
    """``fn`` over ``items`` on ``workers`` threads, results in order. When one call fails
    (an error, a timeout), the others stop at their next block instead of transferring to
    the end, and that first failure is raised (not the stops it caused)."""
    from concurrent.futures import wait

    failed = threading.Event()
    first: list[BaseException] = []
    lock = threading.Lock()

    def call(item: _T) -> _R | None:
        if failed.is_set():
            return None  # not started: the operation failed already
        with network.stop_when(failed):
            try:
                return fn(item)
            except BaseException as e:
                with lock:
                    if not failed.is_set():
                        first.append(e)
                        failed.set()
                raise

    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        futures = [ex.submit(call, item) for item in items]
        # Wait here, not in the pool's exit: Ctrl-C must interrupt a wait, not a thread join
        # (an interrupted join marks the thread finished in CPython 3.11, and the process
        # would then exit under a worker still cancelling its upload session).
        wait(futures)
    if first:
        raise first[0]
    return [f.result() for f in futures]  # type: ignore[misc]


@dataclass
class PushResult:
    ref: str
    digest: str
    tag: str | None
    files: int
    bytes_total: int
    uploaded_blobs: int = 0
    uploaded_bytes: int = 0
    unchanged: bool = False
    manifest: BuiltArtifact | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)  # what was cleaned up from earlier pushes

    def to_dict(self) -> dict[str, object]:
        return {"ref": self.ref, "digest": self.digest, "tag": self.tag, "files": self.files,
                "bytes": self.bytes_total, "uploadedBlobs": self.uploaded_blobs,
                "uploadedBytes": self.uploaded_bytes, "unchanged": self.unchanged,
                "recovered": self.notes}


def package(model_dir: str | os.PathLike[str], metadata: ModelMetadata, *,
            role_overrides: Sequence[tuple[str, str]] = (), follow_symlinks: bool = False,
            cache: DigestCache | None = None, progress: Progress | None = None,
            exclude: Sequence[str] = DEFAULT_EXCLUDES) -> tuple[BuiltArtifact, list[Path]]:
    """Hash a model directory and build its ModelPack manifest (nothing uploaded).

    ``exclude``: gitignore-style patterns left out (default: the same as ``modelseal run``)."""
    progress = progress or Progress()
    files = walk_files(model_dir, follow_symlinks=follow_symlinks, exclude=exclude)
    if not files:
        raise InputError(f"{model_dir} holds no files: nothing to package")
    advance = progress.start("hashing", sum(f.size for f in files))
    try:
        digests = hash_files([f.path for f in files], cache=cache, progress=advance)
    finally:
        progress.finish()
    # where a packed model's tar layers are written, made only when packing (push removes it
    # after uploading)
    made: list[Path] = []

    def scratch() -> Path:
        try:
            made.append(Path(tempfile.mkdtemp(prefix="modelseal-pack-")))
        except OSError as e:
            raise InputError(f"cannot make a scratch directory for the model's tar layers "
                             f"({e.strerror or e})", hint="set TMPDIR to a writable directory "
                             "with room for the model's small files") from e
        return made[-1]

    try:
        built = build_artifact(digests, [f.relpath for f in files], metadata,
                               role_overrides=role_overrides, scratch=scratch)
    except BaseException:
        for d in made:
            shutil.rmtree(d, ignore_errors=True)
        raise
    return built, [f.path for f in files]


def check_tag(store: Store, tag: str, built: BuiltArtifact, allow_retag: bool) -> str | None:
    """Refuse to move ``tag`` to other content. Returns the existing digest when the tag
    already holds this very content (then pushing is a no-op)."""
    return _tag_verdict(store, tag, built, allow_retag, store.resolve(tag))


def _tag_verdict(store: Store, tag: str, built: BuiltArtifact, allow_retag: bool,
                 existing: str | None) -> str | None:
    """``check_tag`` given the digest ``tag`` points at now."""
    if existing is None or existing == built.manifest_digest:
        return existing
    raw, _, _ = store.get_manifest(existing)
    with contextlib.suppress(Exception):
        old_cfg_digest = json.loads(raw)["config"]["digest"]
        old_cfg = store.get_blob_bytes(old_cfg_digest)
        if content_key(raw, old_cfg) == content_key(built.manifest_bytes, built.config_bytes):
            return existing
    if allow_retag:
        return None
    raise TagConflictError(
        f"tag {tag!r} in {store.describe()} already points at {existing}; this push would "
        f"move it to {built.manifest_digest}: refused",
        hint="push under a new tag (tags are immutable releases), or pass --allow-retag if "
             "moving the tag is really intended")


def push(model_dir: str | os.PathLike[str], store: Store, ref: Ref, metadata: ModelMetadata, *,
         role_overrides: Sequence[tuple[str, str]] = (), allow_retag: bool = False,
         follow_symlinks: bool = False, cache: DigestCache | None = None,
         progress: Progress | None = None, workers: int = 4,
         exclude: Sequence[str] = DEFAULT_EXCLUDES) -> PushResult:
    """Package ``model_dir`` and push it to ``store`` under ``ref.tag``."""
    progress = progress or Progress()
    if ref.digest:
        raise UsageError(f"cannot push to {ref}: push to a tag; the digest is computed")
    built, paths = package(model_dir, metadata, role_overrides=role_overrides,
                           follow_symlinks=follow_symlinks, cache=cache, progress=progress,
                           exclude=exclude)
    try:
        return _push_built(built, paths, store, ref, allow_retag=allow_retag,
                           progress=progress, workers=workers)
    finally:
        if built.scratch is not None:
            shutil.rmtree(built.scratch, ignore_errors=True)


def _push_built(built: BuiltArtifact, paths: Sequence[Path], store: Store, ref: Ref, *,
                allow_retag: bool, progress: Progress, workers: int) -> PushResult:
    tag = ref.tag
    total = sum(la.size for la in built.layers)
    result = PushResult(str(ref.with_tag(tag)), built.manifest_digest, tag, len(built.layers),
                        total, manifest=built)
    if tag is not None:
        existing = check_tag(store, tag, built, allow_retag)
        if existing is not None:
            result.digest, result.unchanged = existing, True
            return result

    # Blobs first (several at once: small files are dominated by round trips), manifest last.
    # A packed model's files inside tar layers are uploaded as their tars.
    unique = {la.digest: (la.size, p) for la, p in zip(built.layers, paths, strict=True)
              if la.packed_in is None}
    unique.update({d: (t.stat().st_size, t) for d, t in built.tars.items()})
    advance = progress.start("uploading", sum(size for size, _ in unique.values()))
    try:
        def upload(item: tuple[str, tuple[int, Path]]) -> tuple[bool, int]:
            digest, (size, path) = item
            return store.put_blob_file(path, digest, size, advance), size

        # one upload failing stops the others at their next block (run_stopping_on_failure)
        for sent, size in run_stopping_on_failure(upload, list(unique.items()), workers):
            if sent:
                result.uploaded_blobs += 1
                result.uploaded_bytes += size
    finally:
        progress.finish()
    if built.file_list is not None:
        store.put_blob_bytes(built.file_list)
    store.put_blob_bytes(built.config_bytes)
    if isinstance(store, LayoutStore):
        result.notes = [f"removed {p}, left by an interrupted write"
                        for p in store.removed_temporaries]
    if tag is not None and isinstance(store, LayoutStore):
        # Check again and write under the index lock: of two pushes racing for one tag,
        # exactly one wins; the other is refused (or is a no-op for the same content).
        def guard(now: str | None) -> str | None:
            return _tag_verdict(store, tag, built, allow_retag, now)

        written = store.put_manifest(built.manifest_bytes, MANIFEST_V1, tag, guard=guard)
        if written != built.manifest_digest:
            result.digest, result.unchanged = written, True
        return result
    if tag is not None and not allow_retag:
        # A registry has no conditional tag write: check once more right before it, so only
        # a push racing within this instant can still slip through.
        existing = check_tag(store, tag, built, allow_retag)
        if existing is not None:
            result.digest, result.unchanged = existing, True
            return result
        # ... and re-read the tag after writing it: a lost race is reported (exit 5)
        exclusive = getattr(store, "put_manifest_exclusive", None)
        if exclusive is not None:
            written = exclusive(built.manifest_bytes, MANIFEST_V1, tag, same_content=lambda d: (
                _tag_verdict(store, tag, built, True, d) is not None))
            if written != built.manifest_digest:  # the same model, pushed at once by another
                result.digest, result.unchanged = written, True
            return result
    store.put_manifest(built.manifest_bytes, MANIFEST_V1, tag)
    return result


def fetch_model_manifest(store: Store, ref: Ref) -> ModelManifest:
    """Resolve ``ref`` once and return its parsed, path-checked manifest."""
    raw, _, digest = store.get_manifest(ref.reference)
    if ref.digest and digest != ref.digest:
        raise InputError(f"{store.describe()} returned manifest {digest} for {ref.digest}")
    manifest = parse_model_manifest(raw, digest)
    if manifest.file_list is not None:  # a packed model: the files inside its tar layers
        from modelseal.tarlayers import MAX_FILE_LIST_BYTES

        data = store.get_blob_bytes(manifest.file_list.digest, max_size=MAX_FILE_LIST_BYTES)
        manifest = with_file_list(manifest, data)
    return manifest


@dataclass
class PullResult:
    ref: str
    digest: str
    target: str
    files: int
    bytes_total: int
    notes: list[str] = field(default_factory=list)  # what was cleaned up from earlier pulls

    def to_dict(self) -> dict[str, object]:
        return {"ref": self.ref, "digest": self.digest, "target": self.target,
                "files": self.files, "bytes": self.bytes_total, "recovered": self.notes}


def _check_target(target: Path, manifest: ModelManifest, overwrite: bool) -> None:
    """Refuse a target that is not a plain directory, and (without ``overwrite``) one that
    already holds files: a pull leaves exactly the model's tree."""
    if not target.exists() and not target.is_symlink():
        return
    if target.is_symlink() or not target.is_dir():
        raise InputError(f"pull target {target} exists and is not a directory")
    if target.stat().st_dev != target.parent.stat().st_dev:
        raise InputError(
            f"pull target {target} is a mount point: it cannot be replaced in one step",
            hint="pull into a directory inside the mounted file system")
    if overwrite:
        return  # replaced as a whole: nothing is written through what is in it now
    for layer in manifest.layers:
        parts = layer.filepath.split("/")
        cur = target
        for i, part in enumerate(parts):
            cur = cur / part
            if cur.is_symlink():
                raise UnsafePathError(
                    f"{layer.filepath} would be written through the symbolic link {cur}: refused")
            if i < len(parts) - 1 and cur.exists() and not cur.is_dir():
                raise InputError(f"{layer.filepath}: {cur} exists and is not a directory")
        if cur.exists() and (cur.is_dir() or not overwrite):
            raise InputError(f"{cur} already exists in the pull target: refused",
                             hint="pull into a new or empty directory, or pass --overwrite")
    if any(target.iterdir()):
        raise InputError(
            f"pull target {target} is not empty: a pull leaves exactly the model's files, "
            "so it does not mix them with others",
            hint="pull into a new or empty directory, or pass --overwrite to replace the "
                 "directory's whole content with the model")


# -- the atomic switch -----------------------------------------------------------------------
# A pull builds the complete tree in a sibling staging directory (same file system), fsyncs
# every file and directory, then switches under a lock on the parent directory:
#   new target:       rename(staging, target)                         -- atomic
#   existing target:  journal, then renameat2(RENAME_EXCHANGE) (Linux), else
#                     rename(target, old) + rename(staging, target); then drop the journal.
# The journal names both trees by inode, so whoever takes the lock next (any pull into that
# target) can tell which side of the switch a killed pull stopped on: it undoes a half-done
# switch and finishes a done one, then removes staging and old trees whose owner PID is gone.

STAGING_MARK = ".modelseal-pull-"
OLD_MARK = ".modelseal-old-"
JOURNAL_MARK = ".modelseal-journal"
KILL_ENV = "MODELSEAL_TEST_KILL_AT"
"""Test hook: ``file:N`` (after the N-th file is written), ``journal``, ``moved-old``,
``swapped``, ``committed``: the process SIGKILLs itself there, so tests can stop a pull at
every step."""
NO_EXCHANGE_ENV = "MODELSEAL_TEST_NO_EXCHANGE"
"""Test hook: use the two-rename switch (what runs where RENAME_EXCHANGE is missing)."""


def _kill_point(point: str) -> None:
    if os.environ.get(KILL_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def _names(target: Path) -> tuple[str, str, str]:
    """(staging prefix, old-tree prefix, journal name) for ``target``: hidden siblings."""
    return (f".{target.name}{STAGING_MARK}", f".{target.name}{OLD_MARK}",
            f".{target.name}{JOURNAL_MARK}")


@contextlib.contextmanager
def _parent_lock(parent: Path) -> Iterator[None]:
    """Exclusive flock on the parent directory itself (no lock file to leave behind); held
    for the short recovery and switch steps only, never while downloading."""
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT/SIGTERM wait until the switch is over (SIGKILL cannot: the journal covers it)."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    except (AttributeError, OSError, ValueError):
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directory entries atomically (Linux renameat2 RENAME_EXCHANGE); False when
    the system or file system cannot."""
    if os.environ.get(NO_EXCHANGE_ENV) or not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _ino(p: Path) -> int | None:
    try:
        return p.lstat().st_ino
    except FileNotFoundError:
        return None


def _rmtree(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def recover(target: str | os.PathLike[str]) -> list[str]:
    """Finish or undo what an interrupted pull into ``target`` left, and remove its staging
    and old trees once their owner process is gone. Returns what was done, for the user.

    Every pull calls it first; it takes the same lock as the switch."""
    target = Path(os.path.abspath(target))
    parent = target.parent
    if not parent.is_dir():
        return []
    with _parent_lock(parent):
        return _recover_locked(target)


def _recover_locked(target: Path) -> list[str]:
    parent = target.parent
    staging_prefix, old_prefix, journal_name = _names(target)
    journal = parent / journal_name
    notes: list[str] = []
    if journal.exists():
        try:
            j = json.loads(journal.read_bytes())
            new_path, old_path = parent / str(j["staging"]), parent / str(j["old"])
            new_ino, old_ino = int(j["new_ino"]), int(j["old_ino"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"the pull journal {journal} is unreadable ({e}): {target} may "
                             "be the old or the new model; check it, then delete the journal"
                             ) from e
        now = _ino(target)
        if now == new_ino:  # switched: only the clean-up was missing
            notes.append(f"completed an interrupted pull into {target} (pid {j.get('pid')})")
        elif now == old_ino:  # never switched
            notes.append(f"undid an interrupted pull into {target} (pid {j.get('pid')}): "
                         "it stopped before the switch; the target is as it was")
        elif now is None and _ino(old_path) == old_ino:  # between the two renames
            os.rename(old_path, target)
            fsync_dir(parent)
            notes.append(f"undid an interrupted pull into {target} (pid {j.get('pid')}): "
                         "the previous content is back in place")
        else:
            notes.append(f"{target} changed since an interrupted pull (pid {j.get('pid')}): "
                         "left as it is")
        for p in (new_path, old_path):
            if p != target:
                _rmtree(p)
        fsync_dir(parent)
        journal.unlink()
        fsync_dir(parent)
    for prefix in (staging_prefix, old_prefix):
        for p in remove_stale(parent, prefix):
            notes.append(f"removed {p}, left by an interrupted pull")
    return notes


def _space_check(parent: Path, manifest: ModelManifest) -> None:
    """Refuse before writing when the file system cannot hold the model (bytes or inodes)."""
    try:
        st = os.statvfs(parent)
    except OSError:
        return
    block = st.f_frsize or st.f_bsize or 4096
    dirs = {"/".join(la.filepath.split("/")[:i]) for la in manifest.layers
            for i in range(1, la.filepath.count("/") + 1)}
    need = sum(-(-la.size // block) * block for la in manifest.layers) + (len(dirs) + 1) * block
    # a packed model's tars sit beside the tree while unpacked, a few at a time
    need += sum(sorted((d.size for d, _ in manifest.tar_layers), reverse=True)[:8])
    free = st.f_bavail * block
    if need > free:
        raise DiskFullError(
            f"not enough space in {parent} for the model: {need:,} bytes are needed, "
            f"{free:,} are free", hint="free space there, or pull into another directory")
    inodes = len(manifest.layers) + len(dirs) + 2  # + the staging root and the journal
    if st.f_files and inodes > st.f_favail:
        raise DiskFullError(
            f"not enough inodes in {parent} for the model: {inodes:,} files and directories "
            f"are needed, {st.f_favail:,} are free",
            hint="free inodes there, or pull into another directory")


def pull(store: Store, ref: Ref, target_dir: str | os.PathLike[str], *,
         manifest: ModelManifest | None = None, overwrite: bool = False,
         progress: Progress | None = None, workers: int = 4) -> PullResult:
    """Pull a ModelPack artifact into ``target_dir``, byte for byte, or leave it untouched.

    The target ends as exactly the model's tree (``overwrite`` replaces an existing
    directory's whole content) or as it was, whatever interrupts the pull (see the comment
    above ``recover``)."""
    progress = progress or Progress()
    target = Path(os.path.abspath(target_dir))
    manifest = manifest or fetch_model_manifest(store, ref)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if e.errno in NO_SPACE:
            raise disk_full_error(parent, e) from e
        raise InputError(f"cannot create {parent}: {e.strerror or e}") from e
    notes = recover(target)
    _check_target(target, manifest, overwrite)
    _space_check(parent, manifest)
    staging_prefix = _names(target)[0]
    try:
        staging = Path(tempfile.mkdtemp(prefix=f"{staging_prefix}{owner_tag()}-", dir=parent))
    except OSError as e:
        if e.errno in NO_SPACE:
            raise disk_full_error(parent, e) from e
        raise
    total = sum(la.size for la in manifest.layers)
    try:
        try:
            _download(store, manifest, staging, progress, workers, prefix=staging_prefix)
        except OSError as e:
            if e.errno in NO_SPACE:
                raise disk_full_error(parent, e, total) from e
            raise
        old = _switch(staging, target, overwrite)
    finally:
        _rmtree(staging)
    if old is not None:
        _rmtree(old)  # killed here: the next run removes it (its name carries our PID)
    result = PullResult(str(ref.with_digest(manifest.digest)), manifest.digest, str(target),
                        len(manifest.layers), total)
    result.notes = notes
    return result


WRITE_BEHIND_MIN = 64 << 20
"""Files at least this large are written on a thread of their own (:class:`_WriteBehind`)."""
WRITE_BEHIND_DEPTH = 2
"""Chunks (4 MiB each from a registry) queued between the downloading and the writing thread."""
WRITE_BEHIND_STEP = 64 << 20
"""Every this many bytes the writing thread hands what it wrote to the disk (see
:class:`_WriteBehind`)."""


class _WriteBehind:
    """A write target that hands each chunk to a writer thread, so the download thread
    receives the next chunk while this one is written (the blob stream hashes on a third:
    ``oci.store.PARALLEL_HASH_MIN``). At most ``WRITE_BEHIND_DEPTH`` chunks wait. A write
    error (a full disk) is raised from the next ``write`` or from ``close``.

    Every ``WRITE_BEHIND_STEP`` bytes the writer asks the kernel (``posix_fadvise``
    ``DONTNEED``; Linux starts writing the range back at once) to write out what it just wrote
    and to drop the step before, now clean, from the page cache. Without that, gigabytes wait
    dirty until the kernel's dirty limit throttles the writer and the closing fsync writes them
    all: on a 10 GiB file that made the pull 1.25x ``curl -o`` instead of 1.0x. The pulled
    file is then not in the page cache afterwards (``curl -o`` leaves it there)."""

    def __init__(self, out: BinaryIO) -> None:
        import queue

        self._out = out
        self._queue: queue.Queue[bytes | None] = queue.Queue(WRITE_BEHIND_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="modelseal-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        written = mark = before = 0  # bytes written; end of the last step; start of the one before
        advise = getattr(os, "posix_fadvise", None)
        while (chunk := self._queue.get()) is not None:
            if self._error is None:  # after an error, drain so the producer never blocks
                try:
                    self._out.write(chunk)
                    written += len(chunk)
                    if advise is not None and written - mark >= WRITE_BEHIND_STEP:
                        self._out.flush()
                        try:
                            advise(self._out.fileno(), before, written - before,
                                   os.POSIX_FADV_DONTNEED)
                        except OSError:
                            advise = None  # only a cache hint: go on without it
                        before, mark = mark, written
                except BaseException as e:
                    self._error = e

    def write(self, b: bytes | bytearray | memoryview) -> int:
        """Queue ``b`` (copied unless it is immutable ``bytes``: the caller may reuse it)."""
        if self._error is not None:
            raise self._error
        self._queue.put(b if isinstance(b, bytes) else bytes(b))
        return len(b)

    def close(self, check: bool = True) -> None:
        """Wait for every queued chunk to be written; with ``check``, raise the writer's
        error, if any."""
        self._queue.put(None)
        self._thread.join()
        if check and self._error is not None:
            raise self._error


def _download(store: Store, manifest: ModelManifest, staging: Path, progress: Progress,
              workers: int, prefix: str = ".modelseal-pull-") -> None:
    """Every blob into ``staging``, hashed while written, fsynced; directories fsynced.

    A tar layer is downloaded (hashed while streamed) beside ``staging``, under a name the
    next pull sweeps like a staging tree, and unpacked only once its digest matched, each
    file checked against the file list (``tarlayers.unpack_tar``)."""
    raw = [la for la in manifest.layers if la.packed_in is None]
    tars = manifest.tar_layers
    advance = progress.start("downloading", sum(la.size for la in raw)
                             + sum(d.size for d, _ in tars))
    done = 0
    count_lock = threading.Lock()
    tar_dir: Path | None = None
    try:
        def counted() -> None:
            nonlocal done
            with count_lock:
                done += 1
                n = done
            _kill_point(f"file:{n}")

        def fetch(layer: Layer) -> None:
            dest = staging.joinpath(*layer.filepath.split("/"))
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "xb") as out:
                if layer.size >= WRITE_BEHIND_MIN:
                    behind = _WriteBehind(out)
                    try:
                        store.fetch_blob(layer.digest, layer.size, behind,  # type: ignore[arg-type]
                                         advance)
                    except BaseException:
                        behind.close(check=False)  # the writer stopped; this error explains
                        raise
                    behind.close()  # every byte written (or the write error raised) first
                else:
                    store.fetch_blob(layer.digest, layer.size, out, advance)
                out.flush()
                os.fsync(out.fileno())  # data on disk before any rename publishes it
            counted()

        def fetch_tar(item: tuple[Descriptor, list[Layer]]) -> None:
            from modelseal.tarlayers import Member, unpack_tar

            desc, files = item
            assert tar_dir is not None
            tmp = tar_dir / desc.digest.replace(":", "-")
            try:
                with open(tmp, "xb") as out:
                    store.fetch_blob(desc.digest, desc.size, out, advance)
                unpack_tar(tmp, [Member(la.filepath, la.digest, la.size) for la in files],
                           staging, what=f"tar layer {desc.digest}", on_file=counted,
                           fsync=per_file_fsync)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()

        def one(item: tuple[tuple[Descriptor, list[Layer]] | None, Layer | None]) -> None:
            tar, layer = item
            if tar is not None:
                fetch_tar(tar)
            elif layer is not None:
                fetch(layer)

        # one syncfs after all instead of a fsync per packed file (thousands of small files)
        per_file_fsync = not _have_syncfs()
        if tars:
            tar_dir = Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}-",
                                            dir=staging.parent))
        # tars first: the big ones start early and the raw files fill the gaps; a failure
        # stops the rest (run_stopping_on_failure)
        run_stopping_on_failure(one, [(t, None) for t in tars] + [(None, la) for la in raw],
                                workers)
        if tars and not per_file_fsync:
            _syncfs(staging)
    finally:
        progress.finish()
        if tar_dir is not None:
            _rmtree(tar_dir)
    dirs = {staging.joinpath(*la.filepath.split("/")).parent for la in manifest.layers}
    for d in sorted(dirs | {staging}, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(d)


def _have_syncfs() -> bool:
    """Whether Linux ``syncfs`` is at hand (it flushes one whole file system)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return hasattr(ctypes.CDLL(None, use_errno=True), "syncfs")
    except OSError:
        return False


def _syncfs(path: Path) -> None:
    """Flush every written file of the file system holding ``path`` to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if ctypes.CDLL(None, use_errno=True).syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


def _switch(staging: Path, target: Path, overwrite: bool) -> Path | None:
    """Put the staged tree in place in one step; returns the old tree to delete, if any."""
    parent = target.parent
    umask = os.umask(0)
    os.umask(umask)
    with _parent_lock(parent), _signals_deferred():
        if not target.exists() and not target.is_symlink():
            staging.chmod(0o777 & ~umask)  # mkdtemp made it 0700; the target gets the usual mode
            try:
                os.rename(staging, target)
            except OSError as e:
                raise InputError(f"{target} appeared while pulling: refused") from e
            fsync_dir(parent)
            return None
        _check_target_again(target, overwrite)
        st = target.stat()
        staging.chmod(st.st_mode & 0o7777)  # the deployer's mode and owner of the directory
        if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
            with contextlib.suppress(OSError):
                os.chown(staging, st.st_uid, st.st_gid)
        _, old_prefix, journal_name = _names(target)
        old = parent / f"{old_prefix}{owner_tag()}-{os.urandom(4).hex()}"
        journal = {"target": target.name, "staging": staging.name, "old": old.name,
                   "new_ino": staging.stat().st_ino, "old_ino": st.st_ino, "pid": os.getpid()}
        # (its temporary is named like staging: swept with it if we die while writing it)
        atomic_write(parent / journal_name, json.dumps(journal).encode(),
                     tmp_prefix=_names(target)[0])
        try:
            _kill_point("journal")
            if _exchange(staging, target):
                old = staging  # the old tree now sits under the staging name
            else:
                os.rename(target, old)
                _kill_point("moved-old")
                os.rename(staging, target)
            fsync_dir(parent)
            _kill_point("swapped")
        except BaseException:
            _recover_locked(target)  # undoes the half-done switch
            raise
        (parent / journal_name).unlink()
        fsync_dir(parent)
        _kill_point("committed")  # the old tree is left under a name with our PID
        return old


def _check_target_again(target: Path, overwrite: bool) -> None:
    if target.is_symlink() or not target.is_dir():
        raise InputError(f"pull target {target} changed while pulling: refused")
    if not overwrite and any(target.iterdir()):
        raise InputError(f"files appeared in the pull target {target} while pulling: refused",
                         hint="pass --overwrite to replace them")


# ---------------------------------------------------------------------------------------------
# publish: push, sign the package step, attach


@dataclass
class PublishResult:
    """A push, and the attestations attached with it (``AttachOutcome``s), the signed bundles
    written, and what the signer cannot sign (file -> reason, known before the upload)."""

    push: PushResult
    attached: list[AttachOutcome] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return self.push.digest

    def newly_attached(self) -> list[str]:
        """Referrer digests attached by this call (each once)."""
        return list(dict.fromkeys(o.digest for o in self.attached if not o.already_attached))

    def already_attached(self) -> list[str]:
        """Referrer digests that were attached before (a retry adds nothing)."""
        return list(dict.fromkeys(o.digest for o in self.attached if o.already_attached))

    def to_dict(self) -> dict[str, object]:
        return {**self.push.to_dict(), "attached": self.newly_attached(),
                "alreadyAttached": self.already_attached(),
                "skipped": [{"file": k, "reason": v} for k, v in self.skipped.items()]}


def publish(model_dir: str | os.PathLike[str], store: Store, ref: Ref,
            metadata: ModelMetadata, *, signer: Signer | None = None,
            attestations: Sequence[str | os.PathLike[str]] = (),
            signed_dir: str | os.PathLike[str] | None = None,
            command: Sequence[str] | None = None,
            exclude: Sequence[str] = DEFAULT_EXCLUDES, **push_kw: Any) -> PublishResult:
    """Push ``model_dir`` (see :func:`push`), then attach the bundles in ``attestations``
    (files or directories) and, with a ``signer``, sign the package step (an in-toto link and
    an OpenSSF model-signing signature, where the signer can make one) and attach it too:
    what ``modelseal push --signer --attestations`` does.

    Everything that can fail early does so before any upload: the bundles are read and
    checked, what the signer cannot sign is known. Each attestation is attached only when it
    is not attached already (the same Statement signed by the same key), so a retry adds
    nothing. The package step's bundles are written to ``signed_dir`` (default
    ``.modelseal/attestations``) by the naming rule of :mod:`modelseal.attest.output`. The
    model is named after its directory unless ``metadata`` names it.
    """
    from modelseal.attest.attachments import bundle_files, package_step_capabilities, read_bundles

    if "name" not in metadata.descriptor:
        metadata = ModelMetadata({**metadata.descriptor, "name": Path(model_dir).resolve().name},
                                 dict(metadata.config), dict(metadata.annotations))
    skipped = package_step_capabilities(signer) if signer is not None else {}
    bundles = read_bundles(bundle_files([Path(a) for a in attestations])) if attestations else []
    pushed = push(model_dir, store, ref, metadata, exclude=exclude, **push_kw)
    out = PublishResult(pushed, skipped=skipped)
    if signer is None and not bundles:
        return out
    _attach_published(out, store, ref, signer, bundles, model_dir, metadata, signed_dir,
                      command or ["modelseal", "push", str(model_dir), str(ref)], exclude)
    return out


def _attach_published(out: PublishResult, store: Store, ref: Ref, signer: Signer | None,
                      bundles: list[tuple[str, bytes]], model_dir: str | os.PathLike[str],
                      metadata: ModelMetadata, signed_dir: str | os.PathLike[str] | None,
                      command: Sequence[str], exclude: Sequence[str]) -> None:
    from modelseal.attest.attachments import (
        AttachedBundles,
        AttachOutcome,
        attach_bundle,
        attach_bundles_once,
        excluded_paths,
        plan_package_step,
        sign_planned,
        subject_of,
    )
    from modelseal.attest.bundle import parse_bundle
    from modelseal.attest.model_signing import SIGNATURE_FILE
    from modelseal.attest.output import bundle_path, write_file

    result = out.push
    subject = subject_of(store, result.digest)
    plan = None
    if signer is not None:
        if result.unchanged or result.manifest is None:
            # sign what is in the store, not what we would have written
            files = fetch_model_manifest(store, ref.with_digest(result.digest)).layers
        else:
            files = result.manifest.layers
        # model_signing verify of MODEL_DIR itself must skip what push left out
        plan = plan_package_step(files, signer, command=command,
                                 model_name=str(metadata.descriptor.get("name", "model")),
                                 ignore_paths=excluded_paths(Path(model_dir), exclude))
    types: list[str | None] = []
    for _source, data in bundles:
        try:
            types.append(parse_bundle(data).predicate_type)
        except Exception:  # attach_bundles_once names the file
            types.append(None)
    if plan is not None:
        types += [st.get("predicateType") for st in plan.statements.values()]
    existing = AttachedBundles(store, subject.digest, types)
    out.attached += attach_bundles_once(store, subject, bundles, existing)
    if plan is None or signer is None:
        return
    for name, st in plan.statements.items():
        # the model-signing signature keeps the name model_signing expects
        path = bundle_path("package", signer, directory=signed_dir,
                           filename=SIGNATURE_FILE if name == SIGNATURE_FILE else None)
        there = existing.signed_by(st, signer)
        if there is not None:  # signed and attached by this signer before: not again
            out.attached.append(AttachOutcome(there.digest, None, path.name, True))
            continue
        data = sign_planned(name, st, signer)
        out.written.append(write_file(data, path))
        a = attach_bundle(store, subject, data, path.name)
        existing.add(a.descriptor, data)
        out.attached.append(AttachOutcome(a.descriptor.digest, a.tag, path.name, False))
