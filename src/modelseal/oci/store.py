"""The store interface: what every OCI backend (registry, image-layout directory) offers.

Everything above this module speaks of digests; a tag is resolved once, at the edge.
Backends check every byte they hand out against its digest while streaming.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from modelseal._util.json import type_name
from modelseal.errors import InputError

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    artifact_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                             "size": self.size}
        if self.artifact_type:
            d["artifactType"] = self.artifact_type
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d

    @classmethod
    def from_dict(cls, d: Any, what: str = "descriptor") -> Descriptor:
        """Read a descriptor from outside JSON, checking every field's type and shape.

        Raises InputError naming ``what`` and the field; never KeyError or TypeError."""
        if not isinstance(d, dict):
            raise InputError(f"{what} is {type_name(d)}, not a descriptor object")
        media_type = d.get("mediaType")
        if not isinstance(media_type, str) or not MEDIA_TYPE_RE.fullmatch(media_type):
            raise InputError(f"{what}: mediaType {_shown(media_type)} is not a media type")
        digest = d.get("digest")
        if not isinstance(digest, str) or not DIGEST_GRAMMAR_RE.fullmatch(digest):
            raise InputError(f"{what}: digest {_shown(digest)} is not an OCI digest")
        size = d.get("size")
        # bool is an int in Python, not in JSON
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InputError(f"{what}: size {_shown(size)} is not a non-negative integer")
        annotations = d.get("annotations")
        if annotations is None:
            annotations = {}
        if not isinstance(annotations, dict) or not all(
                isinstance(v, str) for v in annotations.values()):
            raise InputError(f"{what}: annotations must map strings to strings")
        artifact_type = d.get("artifactType")
        if artifact_type is not None and not isinstance(artifact_type, str):
            raise InputError(f"{what}: artifactType {_shown(artifact_type)} is not a string")
        return cls(media_type=media_type, digest=digest, size=size,
                   annotations=dict(annotations), artifact_type=artifact_type or None)


# OCI image-spec descriptor grammar (descriptor.md): algorithm ":" encoded
DIGEST_GRAMMAR_RE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
# RFC 6838 type/subtype, with parameters (the bundle's ";version=0.3")
MEDIA_TYPE_RE = re.compile(r"[A-Za-z0-9][\w!#$&^.+-]{0,126}/[A-Za-z0-9][\w!#$&^.+-]{0,126}"
                           r"(?:\s*;\s*[\w.+-]+=[\w.+-]+)*")


def _shown(value: Any) -> str:
    """A value from outside, cut short for a message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Store(Protocol):
    """One repository in an OCI registry, or one OCI image-layout directory."""

    def describe(self) -> str:
        """A human name for error messages (``oci:/path`` or ``host/repo``)."""
        ...

    def resolve(self, reference: str) -> str | None:
        """Manifest digest for a tag or digest; None when the tag does not exist."""
        ...

    def get_manifest(self, reference: str) -> tuple[bytes, str, str]:
        """(raw bytes, media type, digest). Bytes are checked against the digest."""
        ...

    def put_manifest(self, data: bytes, media_type: str, tag: str | None = None) -> str:
        """Store a manifest (and point ``tag`` at it); returns its digest. No retag checks here."""
        ...

    def has_blob(self, digest: str) -> bool: ...

    def put_blob_file(self, path: Path, digest: str, size: int,
                      progress: ProgressFn | None = None) -> bool:
        """Upload a file as a blob, streamed; False when it was already there."""
        ...

    def put_blob_bytes(self, data: bytes) -> str:
        """Upload a small blob held in memory; returns its digest."""
        ...

    def fetch_blob(self, digest: str, size: int | None, out: BinaryIO,
                   progress: ProgressFn | None = None) -> None:
        """Stream a blob into ``out``, checking size and digest; raises DigestMismatchError."""
        ...

    def get_blob_bytes(self, digest: str, max_size: int = 64 * 1024 * 1024) -> bytes:
        """A small blob, checked against its digest."""
        ...

    def list_tags(self) -> list[str]: ...

    def referrers_api(self, subject_digest: str) -> list[Descriptor] | None:
        """Referrers from the registry's referrers API; None where the backend has none."""
        ...


def copy_verified(src: Any, out: BinaryIO, digest: str, size: int | None,
                  progress: Callable[[int], None] | None, source: str,
                  chunk: int = 1024 * 1024) -> None:
    """Copy ``src`` (anything with ``readinto``) to ``out`` while hashing it; raise
    DigestMismatchError naming ``source`` when the bytes are not ``digest`` (or not ``size``
    bytes long). Every store backend hands out bytes through this one check."""
    import hashlib

    from modelseal.errors import DigestMismatchError

    h = hashlib.sha256()
    buf = bytearray(chunk)
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
