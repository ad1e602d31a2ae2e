"""Attach artifacts to a model manifest as OCI referrers, and find them again.

Every referrer manifest carries ``subject`` (OCI 1.1) and gets **its own tag**,
``sha256-<subject hex>-<first 32 hex of the referrer digest>``. Tag writes are independent, so
any number of CI jobs can attach at once and nothing is lost; tagged manifests also survive
``registry garbage-collect --delete-untagged``. Where the registry has no referrers API, the
OCI 1.1 fallback index at tag ``sha256-<subject hex>`` is kept up to date for other tools
(oras, cosign) as a cache: read-modify-write, re-read after writing, merge what a concurrent
writer dropped. Discovery reads the referrers API or the index, plus the per-referrer tags, so
an entry a racing index update lost is still found.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from modelseal.digest import sha256_bytes
from modelseal.errors import NotFoundError, StoreError
from modelseal.modelpack import ANN_CREATED, created_time, rfc3339
from modelseal.oci.layout import LayoutStore
from modelseal.oci.store import (
    EMPTY_JSON,
    EMPTY_V1,
    INDEX_V1,
    MANIFEST_V1,
    Descriptor,
    Store,
    canonical_json,
)

TAG_DIGEST_CHARS = 32
ANN_BLOB = "dev.modelseal.referrer.blob"
"""Annotation naming the referrer's single layer, so a reader that trusts only the content
(a verifier checking signatures and Statement subjects) can fetch it in one request."""
INDEX_MERGE_ROUNDS = 8


def fallback_tag(subject_digest: str) -> str:
    """The OCI 1.1 referrers tag schema: ``sha256-<hex>``."""
    algo, _, hexd = subject_digest.partition(":")
    return f"{algo}-{hexd}"


def _short(digest: str) -> str:
    return digest.partition(":")[2][:TAG_DIGEST_CHARS]


def referrer_tag(subject_digest: str, referrer_digest: str) -> str:
    """The tag that keeps one referrer alive and discoverable."""
    return f"{fallback_tag(subject_digest)}-{_short(referrer_digest)}"


@dataclass(frozen=True)
class Attached:
    descriptor: Descriptor  # of the referrer manifest
    tag: str


def attach(store: Store, subject: Descriptor, *, artifact_type: str, blob: bytes,
           blob_media_type: str, annotations: Mapping[str, str] | None = None,
           update_index: bool = True) -> Attached:
    """Push ``blob`` as a referrer of ``subject``; idempotent for identical content."""
    blob_digest = store.put_blob_bytes(blob)
    store.put_blob_bytes(EMPTY_JSON)
    anns = {ANN_CREATED: rfc3339(created_time()), ANN_BLOB: blob_digest, **(annotations or {})}
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_V1,
        "artifactType": artifact_type,
        "config": {"mediaType": EMPTY_V1, "digest": sha256_bytes(EMPTY_JSON), "size": 2},
        "layers": [Descriptor(blob_media_type, blob_digest, len(blob)).to_dict()],
        "subject": subject.to_dict(),
        "annotations": anns,
    }
    raw = canonical_json(manifest)
    digest = sha256_bytes(raw)
    tag = referrer_tag(subject.digest, digest)
    store.put_manifest(raw, MANIFEST_V1, tag)
    desc = Descriptor(MANIFEST_V1, digest, len(raw), dict(anns), artifact_type)
    if update_index and store.referrers_api(subject.digest) is None:
        _add_to_index(store, subject.digest, desc)
    return Attached(desc, tag)


def _read_index(store: Store, subject_digest: str) -> list[Descriptor]:
    tag = fallback_tag(subject_digest)
    if store.resolve(tag) is None:
        return []
    raw, _, _ = store.get_manifest(tag)
    try:
        doc = json.loads(raw)
        return [Descriptor.from_dict(m) for m in doc.get("manifests") or []]
    except (ValueError, KeyError, TypeError) as e:
        raise StoreError(f"referrers index {tag} in {store.describe()} is malformed: {e}") from e


def _add_to_index(store: Store, subject_digest: str, desc: Descriptor) -> None:
    """Read-modify-write of the fallback index; re-read afterwards and merge what is missing."""
    wanted = {desc.digest: desc}
    for _ in range(INDEX_MERGE_ROUNDS):
        current = _read_index(store, subject_digest)
        have = {d.digest for d in current}
        if all(d in have for d in wanted):
            return
        merged = current + [d for k, d in wanted.items() if k not in have]
        # Entries other writers added but that are gone now come back from their tags later.
        wanted.update({d.digest: d for d in merged})
        index = {"schemaVersion": 2, "mediaType": INDEX_V1,
                 "manifests": [d.to_dict() for d in merged]}
        store.put_manifest(canonical_json(index), INDEX_V1, fallback_tag(subject_digest))


def list_referrers(store: Store, subject_digest: str, artifact_type: str | None = None,
                   workers: int = 8) -> list[Descriptor]:
    """Every referrer of ``subject_digest``: from the API or fallback index, plus the tags."""
    found: dict[str, Descriptor] = {}
    prefix = fallback_tag(subject_digest) + "-"
    tagged = {t[len(prefix):] for t in store.list_tags() if t.startswith(prefix)}
    api = store.referrers_api(subject_digest)
    if api is not None:
        found = {d.digest: d for d in api}
    else:
        for d in _read_index(store, subject_digest):
            if ANN_BLOB in d.annotations and _short(d.digest) not in tagged:
                continue  # one of ours whose tag is gone: deleted; the index is only a cache
            found[d.digest] = d
    known_prefixes = {_short(d.digest) for d in found.values()}
    missing = [prefix + t for t in sorted(tagged - known_prefixes)]

    def describe(tag: str) -> Descriptor | None:
        try:
            raw, media_type, digest = store.get_manifest(tag)
        except NotFoundError:
            return None
        doc = json.loads(raw)
        if (doc.get("subject") or {}).get("digest") != subject_digest:
            return None  # a tag that only looks like ours
        return Descriptor(media_type, digest, len(raw),
                          {str(k): str(v) for k, v in (doc.get("annotations") or {}).items()},
                          doc.get("artifactType"))

    if missing:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            # A local directory answers in microseconds: threads would only add GIL hand-offs
            # (2 s of 3 for 10,000 referrer tags); a registry needs them for its round trips.
            local = isinstance(store, LayoutStore)
            for maybe in (map(describe, missing) if local else ex.map(describe, missing)):
                if maybe is not None:
                    found[maybe.digest] = maybe
    out = list(found.values())
    if artifact_type:
        out = [d for d in out if d.artifact_type == artifact_type]
    return sorted(out, key=lambda d: (d.annotations.get(ANN_CREATED, ""), d.digest))


def fetch_referrer_blob(store: Store, referrer: Descriptor,
                        subject_digest: str | None = None) -> tuple[bytes, dict[str, object]]:
    """The single layer of a referrer manifest (checked against its digest) and the manifest.

    With ``subject_digest``, refuses a manifest whose subject is another artifact.
    """
    raw, _, digest = store.get_manifest(referrer.digest)
    return _layer_of(store, raw, digest, subject_digest), json.loads(raw)


def fetch_referrer_content(store: Store, referrer: Descriptor) -> bytes:
    """The referrer's single layer in one request when its descriptor names it (annotation
    ``dev.modelseal.referrer.blob``), else through its manifest.

    Only for readers that judge the content itself (signature and Statement subjects): the
    annotation and the manifest's ``subject`` are not signed, so they decide nothing anyway.
    """
    blob = referrer.annotations.get(ANN_BLOB)
    if blob and blob.startswith("sha256:"):
        return store.get_blob_bytes(blob, max_size=32 << 20)
    raw, _, digest = store.get_manifest(referrer.digest)
    return _layer_of(store, raw, digest, None)


def _layer_of(store: Store, raw: bytes, digest: str, subject_digest: str | None) -> bytes:
    doc = json.loads(raw)
    if subject_digest is not None and (doc.get("subject") or {}).get("digest") != subject_digest:
        raise StoreError(f"referrer {digest} in {store.describe()} is about "
                         f"{(doc.get('subject') or {}).get('digest')}, not {subject_digest}")
    layers = doc.get("layers") or []
    if len(layers) != 1:
        raise StoreError(f"referrer {digest} has {len(layers)} layers; expected exactly one")
    return store.get_blob_bytes(Descriptor.from_dict(layers[0]).digest, max_size=32 << 20)
