"""OCI image-layout directory store: the embedded default (``oci:PATH[:TAG]``).

Blobs are written to a temporary file while being hashed and renamed into
``blobs/sha256/<hex>`` only when the digest matches. ``index.json`` is rewritten atomically
under an exclusive lock, so concurrent writers (several CI steps attaching at once) lose nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from modelseal._util.json import loads_object as load_json_object
from modelseal.errors import DigestMismatchError, InputError, NotFoundError, StoreError
from modelseal.oci.store import INDEX_V1, MANIFEST_V1, Descriptor, ProgressFn

REF_NAME = "org.opencontainers.image.ref.name"
CHUNK = 4 * 1024 * 1024


def _hex(digest: str) -> str:
    algo, _, hexd = digest.partition(":")
    if algo != "sha256" or len(hexd) != 64 or any(c not in "0123456789abcdef" for c in hexd):
        raise InputError(f"unsupported or malformed digest {digest!r}")
    return hexd


class LayoutStore:
    """An OCI image-layout directory (created on first write)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = Path(path)

    # -- helpers -----------------------------------------------------------------------------
    def describe(self) -> str:
        return f"oci:{self.root}"

    def _blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / _hex(digest)

    def _ensure(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{self.root} exists and is not a directory")
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        marker = self.root / "oci-layout"
        if not marker.exists():
            self._atomic_write(marker, b'{"imageLayoutVersion":"1.0.0"}')
        if not (self.root / "index.json").exists():
            with self._locked():
                if not (self.root / "index.json").exists():
                    self._write_index({"schemaVersion": 2, "mediaType": INDEX_V1,
                                       "manifests": []})

    def _atomic_write(self, dest: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

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
        p = self.root / "index.json"
        if not p.exists():
            return {"schemaVersion": 2, "mediaType": INDEX_V1, "manifests": []}
        try:
            doc = load_json_object(p.read_bytes(), what=str(p), error=StoreError)
        except OSError as e:
            raise StoreError(f"{p} is unreadable: {e}") from e
        if not isinstance(doc.get("manifests"), list):
            raise StoreError(f"{p} is not an OCI image index")
        # entries that are not objects are not descriptors: skip them rather than crash
        doc["manifests"] = [m for m in doc["manifests"] if isinstance(m, dict)]
        return doc

    def _write_index(self, doc: dict[str, Any]) -> None:
        self._atomic_write(self.root / "index.json",
                           json.dumps(doc, indent=2, sort_keys=True).encode())

    # -- Store protocol ----------------------------------------------------------------------
    def resolve(self, reference: str) -> str | None:
        if reference.startswith("sha256:"):
            return reference if self._blob_path(reference).exists() else None
        for m in self._read_index()["manifests"]:
            if (m.get("annotations") or {}).get(REF_NAME) == reference:
                return str(m.get("digest"))
        return None

    def get_manifest(self, reference: str) -> tuple[bytes, str, str]:
        digest = self.resolve(reference)
        if digest is None:
            raise NotFoundError(f"{self.describe()} has no tag {reference!r}")
        data = self.get_blob_bytes(digest)
        doc = load_json_object(data, what=f"manifest {digest} in {self.describe()}",
                               error=StoreError)
        media_type = str(doc.get("mediaType") or MANIFEST_V1)
        return data, media_type, digest

    def put_manifest(self, data: bytes, media_type: str, tag: str | None = None) -> str:
        digest = self.put_blob_bytes(data)
        if tag is None:
            return digest
        try:
            artifact_type = json.loads(data).get("artifactType")
        except (ValueError, AttributeError):
            artifact_type = None
        with self._locked():
            doc = self._read_index()
            doc["manifests"] = [m for m in doc["manifests"]
                                if (m.get("annotations") or {}).get(REF_NAME) != tag]
            desc = Descriptor(media_type, digest, len(data), {REF_NAME: tag}, artifact_type)
            doc["manifests"].append(desc.to_dict())
            self._write_index(doc)
        return digest

    def has_blob(self, digest: str) -> bool:
        return self._blob_path(digest).exists()

    def put_blob_file(self, path: Path, digest: str, size: int,
                      progress: ProgressFn | None = None) -> bool:
        self._ensure()
        dest = self._blob_path(digest)
        if dest.exists():
            if progress is not None:
                progress(size)
            return False
        try:
            with open(path, "rb", buffering=0) as src:
                self._ingest(src, digest, size, dest, progress, source=str(path))
        except OSError as e:
            raise InputError(f"cannot read {path}: {e.strerror or e}") from e
        return True

    def _ingest(self, src: io.RawIOBase | io.BufferedIOBase, digest: str, size: int | None,
                dest: Path, progress: ProgressFn | None, source: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                self._copy_verified(src, out, digest, size, progress, source)
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @staticmethod
    def _copy_verified(src: io.RawIOBase | io.BufferedIOBase, out: BinaryIO, digest: str,
                       size: int | None, progress: ProgressFn | None, source: str) -> None:
        h = hashlib.sha256()
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        total = 0
        while True:
            n = src.readinto(buf)
            if not n:
                break
            h.update(view[:n])
            out.write(view[:n])
            total += n
            if progress is not None:
                progress(n)
            if size is not None and total > size:
                break
        got = "sha256:" + h.hexdigest()
        if (size is not None and total != size) or got != digest:
            raise DigestMismatchError(
                f"{source}: content does not match {digest} (got {got}, {total} bytes"
                f"{'' if size is None else f', expected {size}'})")

    def put_blob_bytes(self, data: bytes) -> str:
        self._ensure()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        dest = self._blob_path(digest)
        if not dest.exists():
            self._atomic_write(dest, data)
        return digest

    def fetch_blob(self, digest: str, size: int | None, out: BinaryIO,
                   progress: ProgressFn | None = None) -> None:
        p = self._blob_path(digest)
        try:
            src = open(p, "rb", buffering=0)  # noqa: SIM115 - closed below
        except FileNotFoundError as e:
            raise NotFoundError(f"{self.describe()} has no blob {digest}") from e
        with src:
            self._copy_verified(src, out, digest, size, progress,
                                source=f"blob {digest} in {self.describe()}")

    def get_blob_bytes(self, digest: str, max_size: int = 64 * 1024 * 1024) -> bytes:
        p = self._blob_path(digest)
        try:
            if p.stat().st_size > max_size:
                raise StoreError(f"blob {digest} in {self.describe()} is larger than "
                                 f"{max_size} bytes")
            data = p.read_bytes()
        except FileNotFoundError as e:
            raise NotFoundError(f"{self.describe()} has no blob {digest}") from e
        got = "sha256:" + hashlib.sha256(data).hexdigest()
        if got != digest:
            raise DigestMismatchError(
                f"blob {digest} in {self.describe()} has been altered (its content hashes to "
                f"{got})")
        return data

    def list_tags(self) -> list[str]:
        tags = {(m.get("annotations") or {}).get(REF_NAME)
                for m in self._read_index()["manifests"]}
        return sorted(str(t) for t in tags if t)

    def referrers_api(self, subject_digest: str) -> list[Descriptor] | None:
        return None
