"""A registry that plays the attacker, for verifier tests.

``MaliciousStore`` wraps any ``Store`` (a real registry's, an OCI layout's) and does what
whoever can write to a registry, or stand between it and the verifier, can do, without
changing the registry underneath (so one honest pipeline serves many attacks):

- ``add(bundle)``: attach another attestation (a referrer whose content is ``bundle``);
- ``hide(digest)``: make a referrer vanish from the listing (and its fallback tag);
- ``swap(digest, data)``: serve other bytes for a referrer's content;
- ``created``: the unsigned ``org.opencontainers.image.created`` annotation of what it adds.

Every call is recorded in ``calls`` as (method, argument), so a test can also show what the
verifier fetched (never a weight blob to decide).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, BinaryIO

from modelseal.formats import (
    ANN_BLOB,
    ANN_CREATED,
    ANN_PREDICATE_TYPE,
    BUNDLE_MEDIA_TYPE,
    MANIFEST_V1,
)
from modelseal.oci.referrers import fallback_tag, list_referrers
from modelseal.oci.store import Descriptor, Store


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class MaliciousStore:
    """A Store that lies about referrers and their content (see the module docstring)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []
        self.added: dict[str, list[Descriptor]] = {}  # subject -> fake referrers
        self.blobs: dict[str, bytes] = {}  # served instead of the registry's
        self.hidden: set[str] = set()

    # -- the attacker's moves ---------------------------------------------------------------

    def add(self, subject: str, bundle: bytes, *, predicate_type: str | None = None,
            created: str = "2030-01-01T00:00:00Z") -> str:
        """Attach ``bundle`` as a referrer of ``subject``; the fake referrer's digest."""
        blob = _digest(bundle)
        self.blobs[blob] = bundle
        digest = _digest(b"fake referrer manifest " + blob.encode()
                         + str(len(self.added.get(subject, []))).encode())
        ann = {ANN_BLOB: blob, ANN_CREATED: created}
        if predicate_type:
            ann[ANN_PREDICATE_TYPE] = predicate_type
        self.added.setdefault(subject, []).append(
            Descriptor(MANIFEST_V1, digest, 400, ann, BUNDLE_MEDIA_TYPE))
        return digest

    def hide(self, referrer_digest: str) -> None:
        self.hidden.add(referrer_digest)

    def swap(self, referrer: Descriptor, data: bytes) -> None:
        """Serve ``data`` as the content of ``referrer``."""
        blob = referrer.annotations.get(ANN_BLOB)
        assert blob, "only referrers that name their blob can be swapped here"
        self.blobs[blob] = data

    def referrers(self, subject: str) -> list[Descriptor]:
        """What the registry really holds for ``subject`` (before the attacker's moves)."""
        return list_referrers(self.inner, subject, BUNDLE_MEDIA_TYPE)

    # -- the Store protocol ------------------------------------------------------------------

    def describe(self) -> str:
        return "malicious:" + self.inner.describe()

    def resolve(self, reference: str) -> str | None:
        self.calls.append(("resolve", reference))
        return self.inner.resolve(reference)

    def get_manifest(self, reference: str) -> tuple[bytes, str, str]:
        self.calls.append(("get_manifest", reference))
        return self.inner.get_manifest(reference)

    def put_manifest(self, data: bytes, media_type: str, tag: str | None = None) -> str:
        self.calls.append(("put_manifest", tag or ""))
        return self.inner.put_manifest(data, media_type, tag)

    def has_blob(self, digest: str) -> bool:
        return digest in self.blobs or self.inner.has_blob(digest)

    def put_blob_file(self, path: Path, digest: str, size: int, progress: Any = None) -> bool:
        return self.inner.put_blob_file(path, digest, size, progress)

    def put_blob_bytes(self, data: bytes) -> str:
        return self.inner.put_blob_bytes(data)

    def fetch_blob(self, digest: str, size: int | None, out: BinaryIO,
                   progress: Any = None) -> None:
        self.calls.append(("fetch_blob", digest))
        if digest in self.blobs:  # the attacker's registry serves its bytes on every path
            out.write(self.blobs[digest])
            return
        self.inner.fetch_blob(digest, size, out, progress)

    def get_blob_bytes(self, digest: str, max_size: int = 64 * 1024 * 1024) -> bytes:
        self.calls.append(("get_blob_bytes", digest))
        if digest in self.blobs:
            return self.blobs[digest]
        return self.inner.get_blob_bytes(digest, max_size)

    def list_tags(self) -> list[str]:
        self.calls.append(("list_tags", ""))
        hidden = {fallback_tag_of(d) for d in self.hidden}
        return [t for t in self.inner.list_tags() if not any(t.endswith(h) for h in hidden)]

    def referrers_api(self, subject_digest: str) -> list[Descriptor] | None:
        self.calls.append(("referrers_api", subject_digest))
        real = list_referrers(self.inner, subject_digest)
        out = [d for d in real if d.digest not in self.hidden]
        return out + list(self.added.get(subject_digest, []))


def fallback_tag_of(referrer_digest: str) -> str:
    """The tail of the per-referrer tag modelseal gives ``referrer_digest``."""
    from modelseal.oci.referrers import TAG_DIGEST_CHARS

    return referrer_digest.partition(":")[2][:TAG_DIGEST_CHARS]


__all__ = ["MaliciousStore", "fallback_tag", "fallback_tag_of"]
