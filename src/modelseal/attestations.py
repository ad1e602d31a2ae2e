"""Attestations attached to a model: attach Sigstore bundles as OCI referrers, list them, fetch
them, and sign the package step at push time (DESIGN.md section 2)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelseal._util.json import loads_object as load_json_object
from modelseal.errors import InputError
from modelseal.modelpack import ANN_CREATED, Layer
from modelseal.oci.referrers import Attached, attach, fetch_referrer_blob, list_referrers
from modelseal.oci.store import MANIFEST_V1, Descriptor, Store

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
ANN_BUNDLE_CONTENT = "dev.sigstore.bundle.content"
ANN_PREDICATE_TYPE = "dev.sigstore.bundle.predicateType"
BUNDLE_SUFFIXES = (".sigstore.json", ".sigstore", ".bundle.json", ".intoto.json")


def subject_of(store: Store, reference: str) -> Descriptor:
    """The descriptor of a model manifest (resolving a tag once)."""
    raw, media_type, digest = store.get_manifest(reference)
    artifact_type = None
    with contextlib.suppress(InputError):
        artifact_type = load_json_object(raw, what=f"manifest {digest}").get("artifactType")
    if not isinstance(artifact_type, str):
        artifact_type = None
    return Descriptor(media_type or MANIFEST_V1, digest, len(raw), artifact_type=artifact_type)


def bundle_files(paths: Sequence[str | Path]) -> list[Path]:
    """Bundle files named directly, or found (by suffix) in directories, sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*")
                              if f.is_file() and f.name.endswith(BUNDLE_SUFFIXES)))
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(f"attestation {p} does not exist")
    return out


def attach_bundle(store: Store, subject: Descriptor, bundle: bytes,
                  source: str = "bundle") -> Attached:
    """Attach one Sigstore bundle (DSSE in-toto Statement) as a referrer of ``subject``."""
    from modelseal.attest.bundle import parse_bundle

    try:
        pb = parse_bundle(bundle)
    except Exception as e:  # parse_bundle raises InputError with the cause
        raise InputError(f"{source} is not a Sigstore bundle: {e}") from e
    anns = {ANN_BUNDLE_CONTENT: "dsse-envelope"}
    if pb.predicate_type:
        anns[ANN_PREDICATE_TYPE] = pb.predicate_type
    return attach(store, subject, artifact_type=BUNDLE_MEDIA_TYPE, blob=bundle,
                  blob_media_type=BUNDLE_MEDIA_TYPE, annotations=anns)


def attach_bundles(store: Store, subject: Descriptor, files: Sequence[Path]) -> list[Attached]:
    """Attach every bundle file; all are parsed before anything is pushed."""
    from modelseal.attest.bundle import parse_bundle

    blobs = []
    for f in files:
        data = f.read_bytes()
        try:
            parse_bundle(data)
        except Exception as e:
            raise InputError(f"{f} is not a Sigstore bundle: {e}") from e
        blobs.append((f, data))
    return [attach_bundle(store, subject, data, str(f)) for f, data in blobs]


@dataclass(frozen=True)
class AttestationInfo:
    descriptor: Descriptor  # of the referrer manifest
    predicate_type: str | None
    created: str | None
    signer: str | None = None  # claimed, not verified
    bundle: bytes | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.descriptor.digest, "predicateType": self.predicate_type,
                "created": self.created, "signer": self.signer}


def list_attestations(store: Store, subject_digest: str, *, predicate_type: str | None = None,
                      fetch: bool = False, workers: int = 8) -> list[AttestationInfo]:
    """Bundles attached to ``subject_digest``; with ``fetch``, their bytes and claimed signer."""
    refs = [d for d in list_referrers(store, subject_digest, BUNDLE_MEDIA_TYPE)
            if predicate_type is None or d.annotations.get(ANN_PREDICATE_TYPE) == predicate_type]
    if not fetch:
        return [AttestationInfo(d, d.annotations.get(ANN_PREDICATE_TYPE),
                                d.annotations.get(ANN_CREATED)) for d in refs]
    from modelseal.attest.bundle import parse_bundle

    def get(d: Descriptor) -> AttestationInfo:
        blob, _ = fetch_referrer_blob(store, d, subject_digest)
        signer = None
        ptype = d.annotations.get(ANN_PREDICATE_TYPE)
        try:
            pb = parse_bundle(blob)
            signer, ptype = pb.signer_hint, pb.predicate_type or ptype
        except Exception:  # listed anyway; verification will name the problem
            pass
        return AttestationInfo(d, ptype, d.annotations.get(ANN_CREATED), signer, blob)

    with ThreadPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(get, refs))


def sign_package_step(layers: Sequence[Layer], signer: Any, *, command: Sequence[str],
                      model_name: str) -> dict[str, bytes]:
    """Bundles for the package step: an in-toto link (materials = products = the model's files)
    and an OpenSSF model-signing signature, both from the digests already computed."""
    from modelseal.attest.bundle import sign_statement
    from modelseal.attest.model_signing import sign_model_signing
    from modelseal.attest.statement import link_statement

    files = [(la.filepath, la.digest.partition(":")[2]) for la in layers]
    link = link_statement("package", list(command), files, files, byproducts={"return-value": 0},
                          environment={})
    return {
        "package.link.sigstore.json": sign_statement(link, signer),
        "model.sig": sign_model_signing(files, signer, model_name=model_name),
    }
