"""A registry that plays the attacker, for verifier tests.

``MaliciousStore`` wraps any ``Store`` (an OCI layout's, a real registry's) and does what
whoever can write to a registry, or stand between it and the verifier, can do, without
changing the store underneath, so one honest pipeline serves many attacks:

- ``add(subject, bundle)``: attach another attestation (a real referrer manifest, tag and
  fallback-index entry, written to the attacker's overlay by ``oci.referrers.attach``);
- ``hide(digest)``: delete a referrer (or any manifest): its tag vanishes, it is not found,
  the referrers API stops listing it; a fallback index still naming it is now stale;
- ``swap(digest, data)``: serve other bytes for a blob (the model's config, a weight layer, a
  referrer's bundle) or a manifest;
- ``move_tag(tag, digest)``: point a tag at another manifest (one the attacker pushed through
  this store, or an old one: a replay);
- ``serve(reference, raw)``: answer a manifest request with old bytes (a stale fallback
  index, an old model manifest) under their own digest.

Whatever is written through this store (``push``, ``attach``) lands in the overlay, never in
the wrapped store. The attacker controls the registry, not the client: bytes served for a
digest they do not hash to fail the client's check (``DigestMismatchError``), as they would
against any real backend.

Every read is recorded in ``fetches`` as (method, digest or tag), so a test can show what
the verifier fetched (``blobs_fetched``: never a weight blob to decide).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import BinaryIO

from modelseal.attest.attachments import subject_of
from modelseal.errors import DigestMismatchError, NotFoundError, StoreError
from modelseal.formats import (
    ANN_BUNDLE_CONTENT,
    ANN_CREATED,
    ANN_PREDICATE_TYPE,
    BUNDLE_MEDIA_TYPE,
    MANIFEST_V1,
)
from modelseal.oci.referrers import TAG_DIGEST_CHARS, attach, list_referrers
from modelseal.oci.store import BlobStream, Descriptor, ProgressFn, Store


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _checked(digest: str, data: bytes, what: str) -> bytes:
    """The client's check: ``data`` must hash to ``digest``."""
    if _digest(data) != digest:
        raise DigestMismatchError(f"{what} {digest}: the registry served other bytes")
    return data


class MaliciousStore:
    """A Store that lies (see the module docstring); the wrapped store is never written."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.fetches: list[tuple[str, str]] = []
        self.blobs: dict[str, bytes] = {}  # written through this store (content-addressed)
        self.swapped: dict[str, bytes] = {}  # digest -> other bytes served for it
        self.tags: dict[str, str] = {}  # tag -> digest, over the wrapped store's tags
        self.served: dict[str, bytes] = {}  # reference -> manifest bytes served for it
        self.hidden: set[str] = set()  # manifest digests deleted

    # -- the attacker's moves ---------------------------------------------------------------

    def add(self, subject: str, bundle: bytes, *, predicate_type: str | None = None,
            created: str = "2030-01-01T00:00:00Z") -> str:
        """Attach ``bundle`` (any bytes) as a referrer of manifest ``subject``; its digest."""
        anns = {ANN_BUNDLE_CONTENT: "dsse-envelope", ANN_CREATED: created}
        if predicate_type:
            anns[ANN_PREDICATE_TYPE] = predicate_type
        return attach(self, subject_of(self, subject), artifact_type=BUNDLE_MEDIA_TYPE,
                      blob=bundle, blob_media_type=BUNDLE_MEDIA_TYPE,
                      annotations=anns).descriptor.digest

    def hide(self, digest: str) -> None:
        """Delete manifest ``digest`` and every tag pointing at it."""
        self.hidden.add(digest)

    def swap(self, digest: str, data: bytes) -> None:
        """Serve ``data`` for the blob or manifest ``digest``."""
        self.swapped[digest] = data

    def move_tag(self, tag: str, digest: str) -> None:
        """Point ``tag`` at manifest ``digest`` (the wrapped store's, or one pushed here)."""
        self.tags[tag] = digest
        self.served.pop(tag, None)

    def serve(self, reference: str, raw: bytes) -> None:
        """Answer ``get_manifest(reference)`` with ``raw`` (a stale index, a replayed
        manifest); for a digest reference the client's check still applies."""
        self.served[reference] = raw

    def referrers(self, subject: str) -> list[Descriptor]:
        """What the wrapped store holds for ``subject`` (before the attacker's moves)."""
        return list_referrers(self.inner, subject, BUNDLE_MEDIA_TYPE)

    @property
    def blobs_fetched(self) -> set[str]:
        """Digests of every blob read through this store."""
        reads = ("fetch_blob", "open_blob", "get_blob_bytes")
        return {arg for m, arg in self.fetches if m in reads}

    # -- the Store protocol ------------------------------------------------------------------

    def describe(self) -> str:
        return "malicious:" + self.inner.describe()

    def _tag(self, reference: str) -> str | None:
        digest = self.tags[reference] if reference in self.tags else (
            self.inner.resolve(reference))
        return None if digest in self.hidden else digest

    def _listed(self, tag: str) -> bool:
        """Whether ``tag`` is still listed (without a request per tag: a per-referrer tag
        names its referrer's digest)."""
        if tag in self.tags:
            return self.tags[tag] not in self.hidden
        return not any(tag.endswith("-" + short_tag(d)) for d in self.hidden)

    def resolve(self, reference: str) -> str | None:
        self.fetches.append(("resolve", reference))
        if reference in self.served:  # a digest asked for is answered as itself
            return reference if reference.startswith("sha256:") else _digest(
                self.served[reference])
        if reference.startswith("sha256:"):
            if reference in self.hidden:
                return None
            return reference if reference in self.blobs else self.inner.resolve(reference)
        return self._tag(reference)

    def get_manifest(self, reference: str) -> tuple[bytes, str, str]:
        self.fetches.append(("get_manifest", reference))
        if reference in self.served:
            raw = self.served[reference]
            if reference.startswith("sha256:"):
                _checked(reference, raw, "manifest")
            return raw, _media_type(raw), _digest(raw)
        if not reference.startswith("sha256:") and reference not in self.tags:
            raw, media_type, digest = self.inner.get_manifest(reference)
            if digest in self.hidden:
                raise NotFoundError(f"{self.describe()} has no tag {reference!r}")
            return raw, media_type, digest
        digest = self.tags.get(reference, reference)
        if digest in self.hidden:
            raise NotFoundError(f"{self.describe()} has no manifest {reference}")
        if digest in self.swapped:
            _checked(digest, self.swapped[digest], "manifest")
        if digest in self.blobs:
            return self.blobs[digest], _media_type(self.blobs[digest]), digest
        return self.inner.get_manifest(digest)

    def put_manifest(self, data: bytes, media_type: str, tag: str | None = None) -> str:
        digest = self.put_blob_bytes(data)
        if tag is not None:
            self.move_tag(tag, digest)
        return digest

    def has_blob(self, digest: str) -> bool:
        self.fetches.append(("has_blob", digest))
        return digest in self.blobs or self.inner.has_blob(digest)

    def put_blob_file(self, path: Path, digest: str, size: int,
                      progress: ProgressFn | None = None) -> bool:
        self.blobs[digest] = _checked(digest, path.read_bytes(), "blob")
        return True

    def put_blob_bytes(self, data: bytes) -> str:
        self.blobs[_digest(data)] = data
        return _digest(data)

    def fetch_blob(self, digest: str, size: int | None, out: BinaryIO,
                   progress: ProgressFn | None = None) -> None:
        self.fetches.append(("fetch_blob", digest))
        data = self.swapped.get(digest, self.blobs.get(digest))
        if data is None:
            self.inner.fetch_blob(digest, size, out, progress)
            return
        for piece in self._served(data, digest, size):
            out.write(piece)
            if progress is not None:
                progress(len(piece))

    def open_blob(self, digest: str, size: int | None, *, read_ahead: int = 0) -> BlobStream:
        self.fetches.append(("open_blob", digest))
        data = self.swapped.get(digest, self.blobs.get(digest))
        if data is None:
            return self.inner.open_blob(digest, size, read_ahead=read_ahead)
        return self._served(data, digest, size)

    def _served(self, data: bytes, digest: str, size: int | None) -> BlobStream:
        """The attacker's bytes, checked like any backend's (the one BlobStream check)."""
        return BlobStream([memoryview(data)], digest, size, f"blob {digest} in {self.describe()}")

    def get_blob_bytes(self, digest: str, max_size: int = 64 * 1024 * 1024) -> bytes:
        self.fetches.append(("get_blob_bytes", digest))
        data = self.swapped.get(digest, self.blobs.get(digest))
        if data is None:
            return self.inner.get_blob_bytes(digest, max_size)
        if len(data) > max_size:
            raise StoreError(f"blob {digest} in {self.describe()} is larger than {max_size} "
                             "bytes")
        return _checked(digest, data, "blob")

    def list_tags(self) -> list[str]:
        self.fetches.append(("list_tags", ""))
        return sorted(t for t in set(self.inner.list_tags()) | set(self.tags)
                      if self._listed(t))

    def referrers_api(self, subject_digest: str) -> list[Descriptor] | None:
        self.fetches.append(("referrers_api", subject_digest))
        real = self.inner.referrers_api(subject_digest)
        if real is None:  # no API: discovery reads the fallback index and the tags
            return None
        return [d for d in real if d.digest not in self.hidden]


def _media_type(raw: bytes) -> str:
    try:
        found = json.loads(raw).get("mediaType")
    except (ValueError, AttributeError):
        found = None
    return found if isinstance(found, str) else MANIFEST_V1


def short_tag(referrer_digest: str) -> str:
    """The tail of the per-referrer tag modelseal gives ``referrer_digest``."""
    return referrer_digest.partition(":")[2][:TAG_DIGEST_CHARS]


__all__ = ["MaliciousStore", "short_tag"]
