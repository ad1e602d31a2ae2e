"""``oci-archive:FILE.tar``: a single-file OCI image layout (a tar of the layout directory).

Reading never extracts: the tar's member table is read once, and each blob is read straight
from its byte range in the file (one file handle per read, so parallel readers do not share a
position), hashed while streaming like every other backend. Writing builds an ordinary image
layout (a :class:`~modelseal.oci.image_layout.LayoutStore`) in a temporary directory next to the
file, seeded with what the archive already holds, and :meth:`ArchiveStore.commit` tars it into
a temporary file and renames it over the archive in one step: a reader sees the old archive or
the new one, never half of one. Nothing is written unless ``commit`` is called (``copy`` and
``bundle export`` call it once everything arrived).

Besides the layout (``oci-layout``, ``index.json``, ``blobs/``), an archive may carry other
files (an audit bundle's ``modelseal/policy.yaml``, keys, layout): :meth:`extra_files` lists
them and :meth:`read_extra` reads one; :meth:`add_extra` writes one.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from modelseal._util.fs import atomic_writer, walk_files
from modelseal.errors import (
    InputError,
    NotFoundError,
    StoreError,
    UsageError,
)
from modelseal.formats import MANIFEST_V1
from modelseal.oci.image_layout import REF_NAME, LayoutStore
from modelseal.oci.store import BlobStore, Chunk, Descriptor, ProgressFn, read_chunks
from modelseal.refs import DIGEST_RE

CHUNK = 4 * 1024 * 1024
LAYOUT_FILES = ("oci-layout", "index.json")
MAX_INDEX = 16 << 20
MAX_EXTRA = 64 << 20
_HIDDEN = (".*",)  # the layout's lock and temporary files never go into the archive


def _member_name(name: str) -> str | None:
    """The member's path relative to the layout root; None for names that could escape it."""
    p = PurePosixPath(name)
    parts = [x for x in p.parts if x not in ("", ".")]
    if p.is_absolute() or not parts or ".." in parts:
        return None
    return "/".join(parts)


class _Range(io.RawIOBase):
    """A read-only window onto ``length`` bytes of a file starting at ``offset``."""

    def __init__(self, f: BinaryIO, offset: int, length: int) -> None:
        self._f = f
        self._left = length
        f.seek(offset)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._left <= 0:
            return 0
        view = memoryview(b)[: self._left]
        n = self._f.readinto(view)  # type: ignore[attr-defined]
        n = n or 0
        self._left -= n
        return n


def _cleanup(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


class ArchiveStore(BlobStore):
    """An OCI image layout held in one (uncompressed) tar file."""

    def __init__(self, path: str | os.PathLike[str], *, writable: bool = False) -> None:
        self.path = Path(path)
        self.writable = writable  # writes need commit(): only callers that commit open one
        self._members: dict[str, tuple[int, int]] | None = None
        self._writer: LayoutStore | None = None
        self._finalizer: weakref.finalize | None = None  # type: ignore[type-arg]
        self._lock = threading.Lock()  # parallel writers share one temporary layout

    # -- names and members -------------------------------------------------------------------
    def describe(self) -> str:
        return f"oci-archive:{self.path}"

    def _table(self) -> dict[str, tuple[int, int]]:
        """member name -> (offset of its data, size), regular files only."""
        if self._members is not None:
            return self._members
        members: dict[str, tuple[int, int]] = {}
        if self.path.exists():
            if not self.path.is_file():
                raise InputError(f"{self.path} is not a file: an oci-archive is one tar file "
                                 "(for a directory write oci:PATH)")
            try:
                with tarfile.open(self.path, mode="r:") as tf:
                    for m in tf:
                        name = _member_name(m.name)
                        if name is not None and m.isfile():
                            members[name] = (m.offset_data, m.size)
            except tarfile.ReadError as e:
                with open(self.path, "rb") as f:
                    magic = f.read(2)
                hint = ("it looks gzip-compressed: gunzip it first (oci-archive files are "
                        "plain tar)") if magic == b"\x1f\x8b" else None
                raise InputError(f"{self.path} is not a tar archive: {e}", hint=hint) from e
            except OSError as e:
                raise InputError(f"cannot read {self.path}: {e.strerror or e}") from e
            if "index.json" not in members:
                raise InputError(f"{self.path} is a tar file but not an OCI image layout "
                                 "(no index.json)")
        self._members = members
        return members

    def _read_member(self, name: str, max_size: int) -> bytes:
        off, size = self._table()[name]
        if size > max_size:
            raise StoreError(f"{name} in {self.describe()} is larger than {max_size} bytes")
        with open(self.path, "rb") as f:
            f.seek(off)
            return f.read(size)

    def _index(self) -> dict[str, Any]:
        if "index.json" not in self._table():
            return {"manifests": []}
        try:
            doc = json.loads(self._read_member("index.json", MAX_INDEX))
        except ValueError as e:
            raise StoreError(f"index.json in {self.describe()} is not JSON: {e}") from e
        if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
            raise StoreError(f"index.json in {self.describe()} is not an OCI image index")
        return doc

    @staticmethod
    def _blob_name(digest: str) -> str:
        if not DIGEST_RE.match(digest):
            raise InputError(f"unsupported or malformed digest {digest!r}")
        return f"blobs/sha256/{digest[7:]}"

    # -- writing -------------------------------------------------------------------------------
    def _writable(self) -> LayoutStore:
        """The layout directory writes go to, seeded with the archive's content."""
        if not self.writable:
            raise UsageError(
                f"{self.describe()} is read here; modelseal writes oci-archive files only "
                "with `modelseal copy` and `modelseal bundle export`",
                hint="write to oci:DIR first, then `modelseal copy oci:DIR oci-archive:FILE`")
        with self._lock:
            if self._writer is None:
                self._writer = self._seed()
            return self._writer

    def _seed(self) -> LayoutStore:
        parent = self.path.parent
        parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{self.path.name}.modelseal-", dir=parent)
        self._finalizer = weakref.finalize(self, _cleanup, tmp)
        root = Path(tmp)
        for name, (off, size) in self._table().items():
            dest = root.joinpath(*name.split("/"))
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "rb") as src, open(dest, "wb") as out:
                shutil.copyfileobj(_Range(src, off, size), out, CHUNK)
        return LayoutStore(root)

    def add_extra(self, name: str, data: bytes) -> None:
        """Write a file that is not part of the OCI layout (kept by :meth:`commit`)."""
        rel = _member_name(name)
        if rel is None or rel in LAYOUT_FILES or rel.startswith("blobs/"):
            raise InputError(f"{name!r} cannot be added to an archive")
        dest = self._writable().root.joinpath(*rel.split("/"))
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)

    def commit(self) -> None:
        """Write the archive: tar the layout into a temporary file, then rename it into place."""
        if self._writer is None:
            return
        root = self._writer.root
        self._writer.put_blob_bytes(b"{}")  # makes sure oci-layout and index.json exist
        # mode 0600: what archives always had (they were mkstemp files renamed into place)
        with atomic_writer(self.path, mode=0o600, tmp_prefix=f".{self.path.name}.") as raw, \
                tarfile.open(fileobj=raw, mode="w:", format=tarfile.PAX_FORMAT) as tf:
            names = [n for n in LAYOUT_FILES]
            names += [f.relpath for f in walk_files(root, exclude=_HIDDEN)
                      if f.relpath not in LAYOUT_FILES]
            for rel in names:
                info = tf.gettarinfo(str(root / rel), arcname=rel)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0  # the same content makes the same archive
                info.mode = 0o644
                with open(root / rel, "rb") as f:
                    tf.addfile(info, f)
        self._members = None

    def close(self) -> None:
        """Drop the temporary layout (uncommitted writes are discarded)."""
        if self._finalizer is not None:
            self._finalizer()
        self._writer = None
        self._finalizer = None
        self._members = None

    def __enter__(self) -> ArchiveStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- extra files ---------------------------------------------------------------------------
    def extra_files(self) -> list[str]:
        """Files in the archive beside the OCI layout."""
        if self._writer is not None:
            root = self._writer.root
            return [f.relpath for f in walk_files(root, exclude=_HIDDEN)
                    if f.relpath.split("/")[0] not in ("blobs", *LAYOUT_FILES)]
        return sorted(n for n in self._table()
                      if n not in LAYOUT_FILES and not n.startswith("blobs/"))

    def read_extra(self, name: str, max_size: int = MAX_EXTRA) -> bytes:
        """One file beside the layout; NotFoundError when absent."""
        rel = _member_name(name)
        if rel is None:
            raise InputError(f"{name!r} is not a member name")
        if self._writer is not None:
            p = self._writer.root.joinpath(*rel.split("/"))
            if not p.is_file():
                raise NotFoundError(f"{self.describe()} has no file {rel}")
            return p.read_bytes()
        if rel not in self._table():
            raise NotFoundError(f"{self.describe()} has no file {rel}")
        return self._read_member(rel, max_size)

    # -- Store protocol ----------------------------------------------------------------------
    def resolve(self, reference: str) -> str | None:
        if self._writer is not None:
            return self._writer.resolve(reference)
        if reference.startswith("sha256:"):
            return reference if self._blob_name(reference) in self._table() else None
        for m in self._index()["manifests"]:
            if isinstance(m, dict) and (m.get("annotations") or {}).get(REF_NAME) == reference:
                return str(m["digest"])
        return None

    def _read_manifest(self, reference: str) -> tuple[bytes, str, str | None]:
        if self._writer is not None:
            return self._writer._read_manifest(reference)
        digest = self.resolve(reference)
        if digest is None:
            raise NotFoundError(f"{self.describe()} has no tag {reference!r}")
        return self._read_small_blob(digest, 64 * 1024 * 1024), "", digest

    def _check_manifest(self, data: bytes, media_type: str, what: str) -> str:
        try:
            return str(json.loads(data).get("mediaType") or MANIFEST_V1)
        except (ValueError, AttributeError) as e:
            raise StoreError(f"{what} is not JSON") from e

    def put_manifest(self, data: bytes, media_type: str, tag: str | None = None) -> str:
        return self._writable().put_manifest(data, media_type, tag)

    def has_blob(self, digest: str) -> bool:
        if self._writer is not None:
            return self._writer.has_blob(digest)
        return self._blob_name(digest) in self._table()

    def put_blob_file(self, path: Path, digest: str, size: int,
                      progress: ProgressFn | None = None) -> bool:
        return self._writable().put_blob_file(path, digest, size, progress)

    def put_blob_bytes(self, data: bytes) -> str:
        return self._writable().put_blob_bytes(data)

    def _read_blob(self, digest: str, size: int | None) -> Iterator[Chunk]:
        if self._writer is not None:
            yield from self._writer._read_blob(digest, size)
            return
        name = self._blob_name(digest)
        if name not in self._table():
            raise NotFoundError(f"{self.describe()} has no blob {digest}")
        off, length = self._table()[name]
        with open(self.path, "rb") as f:
            yield from read_chunks(_Range(f, off, length), CHUNK)

    def _read_small_blob(self, digest: str, max_size: int) -> bytes:
        if self._writer is not None:
            return self._writer._read_small_blob(digest, max_size)
        name = self._blob_name(digest)
        if name not in self._table():
            raise NotFoundError(f"{self.describe()} has no blob {digest}")
        return self._read_member(name, max_size)

    def list_tags(self) -> list[str]:
        if self._writer is not None:
            return self._writer.list_tags()
        tags = {(m.get("annotations") or {}).get(REF_NAME)
                for m in self._index()["manifests"] if isinstance(m, dict)}
        return sorted(str(t) for t in tags if t)

    def referrers_api(self, subject_digest: str) -> list[Descriptor] | None:
        return None

    def blob_path(self, digest: str) -> Path | None:
        """A file holding the blob when one exists on disk already (for copying without a
        temporary file); None while the archive is only read."""
        if self._writer is not None and self._writer.has_blob(digest):
            return self._writer.root / self._blob_name(digest)
        return None
