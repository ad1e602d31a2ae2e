"""Verification with I/O: resolve the tag once, fetch the manifest and the referrers, load the
layout and the trusted root, then let ``decision.decide`` judge. No blob of the weights is
fetched. Optionally sign a SLSA Verification Summary Attestation and attach it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelseal._util.json import loads_object as load_json_object
from modelseal._util.limits import (
    MAX_EVIDENCE_BYTES,
    MAX_REFERRERS,
    PER_FILE_ATTESTATION_BYTES,
    attestation_bound,
)
from modelseal.errors import (
    AuthError,
    DigestMismatchError,
    InputError,
    NotFoundError,
    RegistryUnreachableError,
    StoreError,
    UsageError,
)
from modelseal.formats import (
    EMPTY_JSON,
    EMPTY_V1,
    LAYOUT_ARTIFACT_TYPE,
    LAYOUT_MEDIA_TYPE,
    MANIFEST_V1,
)
from modelseal.oci.store import Descriptor, Store, canonical_json
from modelseal.refs import Ref
from modelseal.verify.decision import Evidence, ModelView, decide
from modelseal.verify.policy import Policy
from modelseal.verify.result import Ignored, VerificationResult

if TYPE_CHECKING:
    from modelseal.lifecycle.state import StateStore
    from modelseal.modelpack import ModelManifest
    from modelseal.transfer import PullResult


# ---------------------------------------------------------------------------------------------
# layouts in files or registries


def push_layout(store: Store, signed_layout: bytes, tag: str | None = None) -> str:
    """Push a signed layout as a small OCI artifact; returns its manifest digest (to pin)."""
    from modelseal.digest import sha256_bytes

    blob = store.put_blob_bytes(signed_layout)
    store.put_blob_bytes(EMPTY_JSON)
    manifest = {
        "schemaVersion": 2, "mediaType": MANIFEST_V1, "artifactType": LAYOUT_ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_V1, "digest": sha256_bytes(EMPTY_JSON), "size": 2},
        "layers": [{"mediaType": LAYOUT_MEDIA_TYPE, "digest": blob,
                    "size": len(signed_layout)}],
    }
    return store.put_manifest(canonical_json(manifest), MANIFEST_V1, tag)


def fetch_layout(store: Store, digest: str) -> bytes:
    """The signed layout held by the artifact ``digest`` (never a tag: layouts are pinned)."""
    raw, _, got = store.get_manifest(digest)
    if got != digest:
        raise StoreError(f"{store.describe()} returned {got} for layout {digest}")
    doc = load_json_object(raw, what=f"layout artifact {digest}")
    found = doc.get("layers")
    layers = [Descriptor.from_dict(la, f"layout artifact {digest}: layer")
              for la in (found if isinstance(found, list) else [])]
    chosen = [la for la in layers if la.media_type == LAYOUT_MEDIA_TYPE] or layers
    if len(chosen) != 1:
        raise InputError(f"layout artifact {digest} has {len(chosen)} layers; expected one "
                         f"({LAYOUT_MEDIA_TYPE})")
    return store.get_blob_bytes(chosen[0].digest, max_size=16 << 20)


def load_layout_bytes(policy: Policy, registry_options: Mapping[str, Any] | None = None
                      ) -> tuple[bytes, str]:
    """(signed layout bytes, where from) for a policy."""
    if policy.layout_is_oci:
        from modelseal.oci import open_store
        from modelseal.refs import parse_ref

        ref = parse_ref(policy.layout, default_tag=None)
        if not ref.digest:
            raise UsageError(f"layout {policy.layout} must be pinned by digest")
        store = open_store(ref, **dict(registry_options or {}))
        return fetch_layout(store, ref.digest), str(ref)
    try:
        return Path(policy.layout).read_bytes(), policy.layout
    except FileNotFoundError as e:
        raise UsageError(f"{policy.source}: layout {policy.layout}: no such file") from e
    except OSError as e:
        raise InputError(f"layout {policy.layout} cannot be read: {e.strerror or e}") from e


# ---------------------------------------------------------------------------------------------
# verify


def trust_root_for(layout_bytes: bytes, policy: Policy) -> Any:
    """The policy's pinned Sigstore trusted root when the layout has keyless functionaries,
    else None. Decided by the layout (as its signature will be checked), never by sniffing
    attestation bytes: the decision is given its trust material and picks no default."""
    from modelseal.attest.bundle import load_trusted_root
    from modelseal.intoto_layout.model import is_sigstore_key, payload_of

    try:
        keys = payload_of(load_json_object(layout_bytes, what="layout")).get("keys")
    except (ValueError, InputError, AttributeError):
        return None  # not a layout: the decision refuses it
    if isinstance(keys, dict) and any(isinstance(d, dict) and is_sigstore_key(d)
                                      for d in keys.values()):
        return load_trusted_root(policy.trusted_root)
    return None


def relevant_predicate_types(layout_bytes: bytes, policy: Policy) -> set[str] | None:
    """Predicate types the layout's steps and the policy can use; None when unknown.

    Read from the layout before its signature is checked: it only decides which referrers
    are worth fetching, and a forged layout is refused by the decision anyway."""
    from modelseal.formats import LINK_PREDICATE
    from modelseal.intoto_layout.model import EXTENSION, payload_of

    try:
        doc = payload_of(load_json_object(layout_bytes, what="the layout"))
    except (ValueError, InputError):
        return None
    out = {LINK_PREDICATE, *policy.predicate_types()}
    ext = doc.get(EXTENSION)
    sp = ext.get("step_predicates") if isinstance(ext, dict) else None
    if isinstance(sp, dict):
        out.update(str(t) for types in sp.values() if isinstance(types, list) for t in types)
    return out


class _BlobTooLarge(StoreError):
    """A blob went past the attestation bound while streaming."""


class _CappedSink:
    """A write target that keeps fewer than ``cap`` bytes and refuses the chunk that would
    reach it, so a hostile blob's download stops at its first full read chunk. Chunks are
    kept as they come (no growing buffer to copy) and dropped with the sink; a plain class,
    not one defined per call, so no reference cycle keeps a refused buffer alive until the
    garbage collector runs."""

    def __init__(self, cap: int, what: str) -> None:
        self.cap, self.what, self.size = cap, what, 0
        self.chunks: list[bytes] = []

    def write(self, b: bytes) -> int:
        if self.size + len(b) >= self.cap:
            self.chunks.clear()
            raise _BlobTooLarge(f"{self.what} is {self.cap} bytes or more (the bound on "
                                "an attestation): not read further")
        self.chunks.append(bytes(b))
        self.size += len(b)
        return len(b)


def _bounded_bundle(store: Store, referrer: Descriptor, cap: int) -> bytes:
    """The referrer's single layer, never ``cap`` bytes or more: refused from
    the layer descriptor's size when the manifest is read, and cut while streaming when only
    the (unsigned) blob annotation names it."""
    from modelseal.formats import ANN_BLOB
    from modelseal.refs import DIGEST_RE

    blob = referrer.annotations.get(ANN_BLOB)
    size: int | None = None
    if not (blob and DIGEST_RE.fullmatch(blob)):
        raw, _, digest = store.get_manifest(referrer.digest)
        try:
            doc = load_json_object(raw, what=f"referrer {digest}", error=StoreError)
            layers = doc.get("layers")
            if not isinstance(layers, list) or len(layers) != 1:
                raise StoreError(f"referrer {digest} has "
                                 f"{len(layers) if isinstance(layers, list) else 'no'} "
                                 "layers; expected exactly one")
            layer = Descriptor.from_dict(layers[0], f"referrer {digest}: layer")
        except InputError as e:
            raise StoreError(e.message) from e
        blob, size = layer.digest, layer.size
        if size >= cap:
            raise _BlobTooLarge(f"its layer {blob} is {size} bytes; an attestation must be "
                                f"smaller than {cap}: not fetched")
    from modelseal.oci.image_layout import LayoutStore

    if isinstance(store, LayoutStore):
        # a file: its size is known before reading, and it is read in one piece (streaming
        # it would cost a 4 MiB read buffer per thread)
        return store.get_blob_bytes(blob, max_size=cap - 1)
    sink = _CappedSink(cap, f"blob {blob}")
    store.fetch_blob(blob, size, sink, None)  # type: ignore[arg-type]
    data = b"".join(sink.chunks)
    sink.chunks.clear()
    return data


def fetch_evidence(store: Store, subject_digest: str, *, workers: int = 16,
                   predicate_types: set[str] | None = None, files: int = 0
                   ) -> tuple[list[Evidence], list[str], list[Descriptor], list[Ignored]]:
    """Attestation bundles attached to ``subject_digest``: (evidence, notes about referrers
    listed but gone or over a bound, referrers not fetched, referrers refused as hostile).

    With ``predicate_types``, a referrer whose (unsigned) predicate-type annotation names
    another type is not fetched: such a label can only hide an attestation, which whoever can
    write to the registry could also do by deleting it; it can never make a model pass.

    Bounded (``modelseal._util.limits``): at most ``MAX_REFERRERS`` referrers are fetched,
    each under ``attestation_bound(files)``, and at most ``MAX_EVIDENCE_BYTES`` (plus
    ``PER_FILE_ATTESTATION_BYTES`` for each of eight attestations per file of the model) of
    bundles are held: ``files`` is the verified manifest's file count. A referrer that is
    malformed, too large, not a Sigstore bundle or past a bound is
    refused with its reason, and the rest is judged as if it were not there."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from modelseal.attest.bundle import parse_bundle
    from modelseal.formats import ANN_CREATED, ANN_PREDICATE_TYPE, BUNDLE_MEDIA_TYPE
    from modelseal.oci.referrers import list_referrers

    refs = list_referrers(store, subject_digest, BUNDLE_MEDIA_TYPE, workers=workers)
    skipped: list[Descriptor] = []
    if predicate_types is not None:
        keep: list[Descriptor] = []
        for d in refs:
            claimed = d.annotations.get(ANN_PREDICATE_TYPE)
            (keep if claimed is None or claimed in predicate_types else skipped).append(d)
        refs = keep
    notes: list[str] = []
    refused: list[Ignored] = []
    if len(refs) > MAX_REFERRERS:
        notes.append(f"{len(refs)} referrers are attached, more than the {MAX_REFERRERS} "
                     f"modelseal reads per verification: {len(refs) - MAX_REFERRERS} were "
                     "not fetched")
        refused.extend(Ignored(d.digest, f"past the bound of {MAX_REFERRERS} referrers per "
                               "verification: not fetched", d.annotations.get(ANN_PREDICATE_TYPE))
                       for d in refs[MAX_REFERRERS:])
        refs = refs[:MAX_REFERRERS]
    held = 0
    lock = threading.Lock()
    cap = attestation_bound(files)
    budget = MAX_EVIDENCE_BYTES + 8 * PER_FILE_ATTESTATION_BYTES * files

    def get(d: Descriptor) -> Evidence | str | Ignored:
        nonlocal held
        ptype = d.annotations.get(ANN_PREDICATE_TYPE)
        try:
            # One request per bundle: the signature and the Statement's subjects decide,
            # not the (unsigned) referrer manifest.
            blob = _bounded_bundle(store, d, cap)
        except (RegistryUnreachableError, AuthError):
            raise
        except NotFoundError:
            return f"referrer {d.digest} is listed but no longer in the registry"
        except _BlobTooLarge as e:
            return Ignored(d.digest, f"refused: {e.message}", ptype)
        except (StoreError, DigestMismatchError, InputError) as e:
            return Ignored(d.digest, f"cannot be used: {e.message}", ptype)
        try:
            parse_bundle(blob)  # shape only; cheap, and junk is dropped here, not held
        except InputError as e:
            return Ignored(d.digest, f"not a Sigstore bundle: {e.message}", ptype)
        with lock:
            if held + len(blob) > budget:
                return Ignored(d.digest, f"past the bound of {budget} bytes of "
                               "attestations per verification: not read", ptype)
            held += len(blob)
        return Evidence(d.digest, blob, d.annotations.get(ANN_CREATED))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        got = list(ex.map(get, refs))
    notes.extend(g for g in got if isinstance(g, str))
    refused.extend(g for g in got if isinstance(g, Ignored))
    return [g for g in got if isinstance(g, Evidence)], notes, skipped, refused


def verify_and_resolve(store: Store, ref: Ref, policy: Policy, *,
                       now: datetime | None = None,
                       registry_options: Mapping[str, Any] | None = None,
                       workers: int = 16, state: StateStore | None = None
                       ) -> tuple[VerificationResult, ModelManifest]:
    """Verify the model at ``ref``; the result and the manifest that was judged (pull exactly
    that manifest, by digest, so nothing changes between verifying and pulling). ``state``
    remembers each model's lifecycle head (rollback defence) when the policy has lifecycle
    requirements."""
    from modelseal.formats import ANN_PREDICATE_TYPE
    from modelseal.transfer import fetch_model_manifest

    layout_bytes, layout_source = load_layout_bytes(policy, registry_options)
    digest = store.resolve(ref.reference)  # the one and only tag resolution
    if digest is None:
        raise NotFoundError(f"{ref} not found in {store.describe()}")
    pinned = ref.with_digest(digest)
    manifest = fetch_model_manifest(store, pinned)
    evidence, missing, skipped, refused = fetch_evidence(
        store, digest, workers=workers, files=len(manifest.files),
        predicate_types=relevant_predicate_types(layout_bytes, policy))
    root = trust_root_for(layout_bytes, policy)
    lifecycle = policy.lifecycle
    if lifecycle is not None:  # TSA times, layout rules and the remembered head, read here
        lifecycle.prepare(layout_bytes=layout_bytes, layout_keys=policy.layout_keys,
                          evidence=evidence, model_digest=digest, state=state,
                          tag=None if ref.digest else ref.tag, repository=ref.base)
    result = decide(layout_bytes, policy.layout_keys, ModelView(manifest.digest, manifest.files),
                    evidence, trusted_root=root, requirement=policy.requirement(),
                    final_step=policy.final_step, now=now, layout_source=layout_source,
                    ref=str(pinned))
    result.warnings.extend(missing)
    result.ignored.extend(refused)
    result.attestations_seen += len(skipped)
    result.ignored.extend(
        Ignored(d.digest, "its predicate type (as annotated) is used by neither the layout nor "
                "the policy: not fetched", d.annotations.get(ANN_PREDICATE_TYPE))
        for d in skipped)
    if lifecycle is not None:
        lifecycle.finish(result, state)
    return result, manifest


def verify_model(store: Store, ref: Ref, policy: Policy, **kw: Any) -> VerificationResult:
    """Verify the model at ``ref`` against ``policy``: the result (check ``.verified``)."""
    return verify_and_resolve(store, ref, policy, **kw)[0]


def pull_verified(store: Store, ref: Ref, target_dir: str | os.PathLike[str], policy: Policy,
                  *, registry_options: Mapping[str, Any] | None = None,
                  now: datetime | None = None, state: StateStore | None = None,
                  **pull_kw: Any) -> tuple[VerificationResult, PullResult]:
    """Verify, then pull the very manifest that was verified (per-blob digest checks).

    Raises VerificationError (exit 10) on refusal, before anything is written."""
    from modelseal.transfer import pull

    result, manifest = verify_and_resolve(store, ref, policy, now=now,
                                          registry_options=registry_options, state=state)
    result.raise_for_refusal()
    pulled = pull(store, ref.with_digest(manifest.digest), target_dir, manifest=manifest,
                  **pull_kw)
    return result, pulled
