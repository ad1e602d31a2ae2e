"""The store interface: what every OCI backend (registry, image-layout directory) offers.

Everything above this module speaks of digests; a tag is resolved once, at the edge.
Backends check every byte they hand out against its digest while streaming.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

MANIFEST_V1 = "application/vnd.oci.image.manifest.v1+json"
INDEX_V1 = "application/vnd.oci.image.index.v1+json"
EMPTY_V1 = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

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
    def from_dict(cls, d: dict[str, Any]) -> Descriptor:
        return cls(
            media_type=str(d["mediaType"]),
            digest=str(d["digest"]),
            size=int(d["size"]),
            annotations={str(k): str(v) for k, v in (d.get("annotations") or {}).items()},
            artifact_type=d.get("artifactType"),
        )


def canonical_json(obj: Any) -> bytes:
    """The bytes modelseal writes for JSON documents it creates (stable, compact)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


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
