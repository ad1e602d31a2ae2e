"""Hostile referrers, as anyone who can push to a registry can attach them to a model.

Shared by tests/test_hostile_input.py and benchmarks/bench_hostile.py. Each kind is a
different way to try to crash or exhaust a verifier; none is signed by a key of the layout.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from modelseal._util.json import canonical_json
from modelseal.digest import sha256_bytes
from modelseal.formats import (
    ANN_BLOB,
    ANN_CREATED,
    ANN_PREDICATE_TYPE,
    BUNDLE_MEDIA_TYPE,
    EMPTY_DIGEST,
    EMPTY_JSON,
    EMPTY_V1,
    IN_TOTO_PAYLOAD_TYPE,
    INDEX_V1,
    LINK_PREDICATE,
    MANIFEST_V1,
)
from modelseal.oci.referrers import _read_index, fallback_tag, referrer_tag
from modelseal.oci.store import Descriptor, Store


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def bundle(payload: bytes, *, signatures: int = 1, hint: str = "k" * 64,
           sig: bytes = b"\x30" * 70) -> bytes:
    """A keyed Sigstore bundle around ``payload`` with ``signatures`` (garbage) signatures."""
    one = {"keyid": hint, "sig": b64(sig)}
    return json.dumps({
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": hint}, "tlogEntries": []},
        "dsseEnvelope": {"payload": b64(payload), "payloadType": IN_TOTO_PAYLOAD_TYPE,
                         "signatures": [one] * signatures},
    }, separators=(",", ":")).encode()


def link_statement(subject_digest: str, predicate: object, step: str = "train") -> bytes:
    """A link Statement about the model manifest (unsigned: its bundle's signature is junk)."""
    return json.dumps({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "model", "digest": {"sha256": subject_digest.partition(":")[2]}}],
        "predicateType": LINK_PREDICATE,
        "predicate": predicate if predicate is not None else {"name": step},
    }).encode()


def hostile_blobs(subject_digest: str) -> dict[str, bytes]:
    """One blob per kind of hostile attestation."""
    depth = 100_000
    return {
        "deep-json": b"[" * depth + b"]" * depth,
        "deep-payload": bundle(b'{"a":' * 5000 + b"1" + b"}" * 5000),
        "not-utf8": b"\xff\xfe" + b"\x00garbage" * 100,
        "duplicate-keys": b'{"mediaType":"x","mediaType":"' + BUNDLE_MEDIA_TYPE.encode() + b'"}',
        "many-signatures": bundle(link_statement(subject_digest, None), signatures=1000,
                                  sig=b"\x01"),
        "malformed-predicate": bundle(link_statement(subject_digest, ["not", "a", "map"])),
        "bad-signature": bundle(link_statement(subject_digest, None)),
        "markup": bundle(link_statement(subject_digest, {"name": "[/b][red]x"})),
    }


def referrer_manifest(subject: Descriptor, layer: Descriptor,
                      annotations: Mapping[str, str]) -> bytes:
    return canonical_json({
        "schemaVersion": 2, "mediaType": MANIFEST_V1, "artifactType": BUNDLE_MEDIA_TYPE,
        "config": {"mediaType": EMPTY_V1, "digest": EMPTY_DIGEST, "size": 2},
        "layers": [layer.to_dict()], "subject": subject.to_dict(),
        "annotations": dict(annotations)})


def attach_raw(store: Store, subject: Descriptor, layer: Descriptor, *,
               annotations: Mapping[str, str] | None = None, name_blob: bool = True,
               created: str = "2026-01-01T00:00:00Z") -> Descriptor:
    """A referrer naming ``layer`` (already in the store), tagged as modelseal tags its own;
    with ``name_blob`` it also carries the one-request blob annotation."""
    anns = {ANN_CREATED: created, ANN_PREDICATE_TYPE: LINK_PREDICATE, **(annotations or {})}
    if name_blob:
        anns[ANN_BLOB] = layer.digest
    raw = referrer_manifest(subject, layer, anns)
    digest = sha256_bytes(raw)
    store.put_manifest(raw, MANIFEST_V1, referrer_tag(subject.digest, digest))
    return Descriptor(MANIFEST_V1, digest, len(raw), anns, BUNDLE_MEDIA_TYPE)


def attach_blobs(store: Store, subject: Descriptor, blobs: Iterable[bytes],
                 **kw: object) -> list[Descriptor]:
    """Push each blob and attach it as a referrer of ``subject``; then list them all in the
    fallback index once (as the many attaches would have)."""
    store.put_blob_bytes(EMPTY_JSON)
    out = []
    for blob in blobs:
        digest = store.put_blob_bytes(blob)
        out.append(attach_raw(store, subject, Descriptor(BUNDLE_MEDIA_TYPE, digest, len(blob)),
                              **kw))  # type: ignore[arg-type]
    index_add(store, subject.digest, out)
    return out


def index_add(store: Store, subject_digest: str, descs: Sequence[Descriptor]) -> None:
    current = _read_index(store, subject_digest)
    have = {d.digest for d in current}
    merged = current + [d for d in descs if d.digest not in have]
    store.put_manifest(canonical_json({"schemaVersion": 2, "mediaType": INDEX_V1,
                                       "manifests": [d.to_dict() for d in merged]}),
                       INDEX_V1, fallback_tag(subject_digest))


def big_blob(store: Store, path: Path, size: int) -> Descriptor:
    """A blob of ``size`` bytes pushed from a file (written once, sparse-free, streamed)."""
    import hashlib

    h = hashlib.sha256()
    chunk = b"\x5a" * (4 << 20)
    with open(path, "wb") as f:
        left = size
        while left:
            piece = chunk[:min(left, len(chunk))]
            f.write(piece)
            h.update(piece)
            left -= len(piece)
    digest = "sha256:" + h.hexdigest()
    store.put_blob_file(path, digest, size)
    return Descriptor(BUNDLE_MEDIA_TYPE, digest, size)
