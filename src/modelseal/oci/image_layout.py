"""OCI image-layout directory store: the embedded default (``oci:PATH[:TAG]``).

Blobs are written to a temporary file while being hashed, fsynced, and renamed into
``blobs/sha256/<hex>`` only when the digest matches. ``index.json`` is rewritten atomically
under an exclusive lock, so concurrent writers (several CI steps attaching at once) lose nothing;
a tag that must not move is checked and written under that same lock. Temporary files are named
``.tmp-<pid>-...``: the first write of a later run removes those whose process is gone (a push
killed mid-blob). ``index.json`` is parsed once per version (its inode, size and mtime), not once
per tag lookup: a subject with 10,000 referrer tags resolves in constant time per tag.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from modelseal._util.fs import (
    atomic_write,
    atomic_writer,
    remove_stale,
)
from modelseal._util.json import loads_object as load_json_object
from modelseal.digest import sha256_bytes
from modelseal.errors import (
    DiskFullError,
    InputError,
    NotFoundError,
    StoreError,
)
from modelseal.formats import INDEX_V1, MANIFEST_V1
from modelseal.oci.store import (
    BlobStore,
    BlobStream,
    Chunk,
    Descriptor,
    ProgressFn,
    read_chunks,
)
from modelseal.refs import DIGEST_RE

REF_NAME = "org.opencontainers.image.ref.name"
CHUNK = 4 * 1024 * 1024
TMP_PREFIX = ".tmp-"
LEGACY_TMP_AGE = 24 * 3600  # temp files from before names carried a PID: removed when this old

TagGuard = Callable[[str | None], str | None]
"""Called under the index lock with the digest a tag points at now (None: no such tag).
Returns a digest to keep instead of writing (the tag already holds this content), None to
write, or raises (e.g. TagConflictError): a check and an act that no other writer can split."""


def _hex(digest: str) -> str:
    if not DIGEST_RE.match(digest):
        raise InputError(f"unsupported or malformed digest {digest!r}")
    return digest[7:]


class LayoutStore(BlobStore):
    """An OCI image-layout directory (created on first write)."""

    cache_manifests = True

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = Path(path)
        self._swept = False
        self.removed_temporaries: list[Path] = []  # by the sweep on the first write
        self._blobs_dir = os.path.join(self.root, "blobs", "sha256")
        self._cache_lock = threading.Lock()
        self._cache_key: tuple[int, int, int, int] | None = None
        self._cache_doc: dict[str, Any] | None = None
        self._cache_tags: dict[str, str] = {}

    # -- helpers -----------------------------------------------------------------------------
    def describe(self) -> str:
        return f"oci:{self.root}"

    def _blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / _hex(digest)

    def _blob_file(self, digest: str) -> str:
        """``_blob_path`` as a string: readers run it once per referrer, pathlib costs."""
        return os.path.join(self._blobs_dir, _hex(digest))

    def _ensure(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{self.root} exists and is not a directory")
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        if not self._swept:
            self._swept = True
            self.removed_temporaries = self.remove_stale_temporaries()
        marker = self.root / "oci-layout"
        if not marker.exists():
            atomic_write(marker, b'{"imageLayoutVersion":"1.0.0"}', tmp_prefix=TMP_PREFIX)
        if not (self.root / "index.json").exists():
            with self._locked():
                if not (self.root / "index.json").exists():
                    self._write_index({"schemaVersion": 2, "mediaType": INDEX_V1,
                                       "manifests": []})

    def remove_stale_temporaries(self) -> list[Path]:
        """Remove temporary files an interrupted writer left (its process is gone)."""
        removed: list[Path] = []
        for d in (self.root, self.root / "blobs" / "sha256"):
            removed += remove_stale(d, TMP_PREFIX)
            with contextlib.suppress(OSError):
                for name in os.listdir(d):
                    p = d / name
                    if (name.startswith(TMP_PREFIX) and not name[len(TMP_PREFIX):][:1].isdigit()
                            and time.time() - p.stat().st_mtime > LEGACY_TMP_AGE):
                        p.unlink()
                        removed.append(p)
        return removed

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".index.lock", "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _read_index(self) -> dict[str, Any]:
        """The parsed index (a fresh copy of its ``manifests`` list: callers may edit it)."""
        doc, _ = self._index()
        return {**doc, "manifests": list(doc["manifests"])}

    def _index(self) -> tuple[dict[str, Any], dict[str, str]]:
        """(index document, tag -> digest), parsed again only when the file changed: every
        write replaces it (new inode), so (inode, size, mtime, ctime) names one version."""
        p = self.root / "index.json"
        try:
            with open(p, "rb") as f:
                st = os.fstat(f.fileno())
                key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                with self._cache_lock:
                    if key == self._cache_key and self._cache_doc is not None:
                        return self._cache_doc, self._cache_tags
                raw = f.read()
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": INDEX_V1, "manifests": []}, {}
        except OSError as e:
            raise StoreError(f"{p} is unreadable: {e}") from e
        doc = load_json_object(raw, what=str(p), error=StoreError)
        if not isinstance(doc.get("manifests"), list):
            raise StoreError(f"{p} is not an OCI image index")
        # entries that are not objects are not descriptors: skip them rather than crash
        doc["manifests"] = [m for m in doc["manifests"] if isinstance(m, dict)]
        tags: dict[str, str] = {}
        for m in doc["manifests"]:
            tag = (m.get("annotations") or {}).get(REF_NAME) if isinstance(m, dict) else None
            if tag is not None and "digest" in m:
                tags.setdefault(str(tag), str(m["digest"]))  # the first entry wins, as before
        with self._cache_lock:
            self._cache_key, self._cache_doc, self._cache_tags = key, doc, tags
        return doc, tags

    def _write_index(self, doc: dict[str, Any]) -> None:
        atomic_write(self.root / "index.json", json.dumps(doc, indent=2, sort_keys=True).encode(),
                     tmp_prefix=TMP_PREFIX)

    # -- Store protocol ----------------------------------------------------------------------
    def resolve(self, reference: str) -> str | None:
        if reference.startswith("sha256:"):
            return reference if os.path.exists(self._blob_file(reference)) else None
        return self._index()[1].get(reference)

    def _read_manifest(self, reference: str) -> tuple[bytes, str, str | None]:
        # A digest needs no lookup: reading the blob is the existence check.
        digest = reference if reference.startswith("sha256:") else self.resolve(reference)
        if digest is None:
            raise NotFoundError(f"{self.describe()} has no tag {reference!r}")
        return self._read_small_blob(digest, 64 * 1024 * 1024), "", digest

    def _check_manifest(self, data: bytes, media_type: str, what: str) -> str:
        doc = load_json_object(data, what=what, error=StoreError)
        return str(doc.get("mediaType") or MANIFEST_V1)

    def put_manifest(self, data: bytes, media_type: str, tag: str | None = None, *,
                     guard: TagGuard | None = None) -> str:
        """Store a manifest and point ``tag`` at it. With ``guard``, the tag's current digest
        is checked under the index lock first (see ``TagGuard``)."""
        digest = self.put_blob_bytes(data)
        if tag is None:
            return digest
        try:
            artifact_type = json.loads(data).get("artifactType")
        except (ValueError, AttributeError):
            artifact_type = None
        with self._locked():
            if guard is not None:
                keep = guard(self._index()[1].get(tag))
                if keep is not None:
                    return keep
            doc = self._read_index()
            doc["manifests"] = [m for m in doc["manifests"]
                                if (m.get("annotations") or {}).get(REF_NAME) != tag]
            desc = Descriptor(media_type, digest, len(data), {REF_NAME: tag}, artifact_type)
            doc["manifests"].append(desc.to_dict())
            self._write_index(doc)
        return digest

    def has_blob(self, digest: str) -> bool:
        return os.path.exists(self._blob_file(digest))

    def put_blob_file(self, path: Path, digest: str, size: int,
                      progress: ProgressFn | None = None) -> bool:
        self._ensure()
        dest = self._blob_path(digest)
        if dest.exists():
            if progress is not None:
                progress(size)
            return False
        self._check_space(dest.parent, size)
        try:
            with open(path, "rb", buffering=0) as src:
                self._ingest(src, digest, size, dest, progress, source=str(path))
        except OSError as e:
            raise InputError(f"cannot read {path}: {e.strerror or e}") from e
        return True

    @staticmethod
    def _check_space(directory: Path, size: int) -> None:
        """Refuse a blob that cannot fit before writing any of it."""
        try:
            st = os.statvfs(directory)
        except OSError:
            return
        free = st.f_bavail * (st.f_frsize or 4096)
        if size > free:
            raise DiskFullError(
                f"not enough space in {directory} for blob of {size:,} bytes: {free:,} free",
                hint="free space there, or push to another directory")

    def _ingest(self, src: io.RawIOBase | io.BufferedIOBase, digest: str, size: int | None,
                dest: Path, progress: ProgressFn | None, source: str) -> None:
        with atomic_writer(dest, mode=0o444, tmp_prefix=TMP_PREFIX, needed=size) as out:
            for piece in BlobStream(read_chunks(src, CHUNK), digest, size, source):
                out.write(piece)
                if progress is not None:
                    progress(len(piece))

    def put_blob_bytes(self, data: bytes) -> str:
        self._ensure()
        digest = sha256_bytes(data)
        dest = self._blob_path(digest)
        if not dest.exists():
            atomic_write(dest, data, mode=0o444, tmp_prefix=TMP_PREFIX)
        return digest

    def _read_blob(self, digest: str, size: int | None) -> Iterator[Chunk]:
        p = self._blob_file(digest)
        try:
            src = open(p, "rb", buffering=0)  # noqa: SIM115 - closed below
        except FileNotFoundError as e:
            raise NotFoundError(f"{self.describe()} has no blob {digest}") from e
        with src:
            yield from read_chunks(src, CHUNK)

    def _read_small_blob(self, digest: str, max_size: int) -> bytes:
        p = self._blob_file(digest)
        try:
            f = open(p, "rb", buffering=0)  # noqa: SIM115 - closed below
        except FileNotFoundError as e:
            raise NotFoundError(f"{self.describe()} has no blob {digest}") from e
        with f:  # one open, one fstat, one read: this runs once per referrer
            if os.fstat(f.fileno()).st_size > max_size:
                raise StoreError(f"blob {digest} in {self.describe()} is larger than "
                                 f"{max_size} bytes")
            return f.read()

    def list_tags(self) -> list[str]:
        return sorted(t for t in self._index()[1] if t)

    def referrers_api(self, subject_digest: str) -> list[Descriptor] | None:
        return None
