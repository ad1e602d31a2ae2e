"""Verification with I/O: load the layout and the trusted root, resolve the tag once, fetch
the manifest and the referrers (``evidence``), then let a ``decision.Verifier`` judge. No blob
of the weights is fetched. Optionally sign a SLSA Verification Summary Attestation and attach
it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from modelseal._util.json import loads_object as load_json_object
from modelseal.errors import InputError, NotFoundError
from modelseal.formats import ANN_PREDICATE_TYPE
from modelseal.oci.store import Store
from modelseal.refs import Ref
from modelseal.verify.decision import ModelView, Verifier
from modelseal.verify.evidence import fetch_evidence, load_layout_bytes, relevant_predicate_types
from modelseal.verify.policy import Policy
from modelseal.verify.result import Ignored, VerificationResult

if TYPE_CHECKING:
    from modelseal.modelpack import ModelManifest
    from modelseal.transfer import PullResult
    from modelseal.verify.lifecycle_requirement import LifecycleMemory


# ---------------------------------------------------------------------------------------------
# verify: fetch, then decide


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


def verify_and_resolve(store: Store, ref: Ref, policy: Policy, *,
                       now: datetime | None = None,
                       registry_options: Mapping[str, Any] | None = None,
                       workers: int = 16, state: LifecycleMemory | None = None
                       ) -> tuple[VerificationResult, ModelManifest]:
    """Verify the model at ``ref``; the result and the manifest that was judged (pull exactly
    that manifest, by digest, so nothing changes between verifying and pulling). ``state``
    remembers each model's lifecycle head (rollback defence) when the policy has lifecycle
    requirements."""
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
    verifier = Verifier(layout_bytes, policy.layout_keys,
                        trusted_root=trust_root_for(layout_bytes, policy),
                        requirement=policy.requirement(), final_step=policy.final_step,
                        now=now, layout_source=layout_source)
    lifecycle = policy.lifecycle
    if lifecycle is not None:  # TSA times, layout rules and the remembered head, read here
        lifecycle.prepare(layout=verifier.layout, evidence=evidence, model_digest=digest,
                          state=state, tag=None if ref.digest else ref.tag,
                          repository=ref.base)
    result = verifier.verify(ModelView(manifest.digest, manifest.files), evidence,
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
                  now: datetime | None = None, state: LifecycleMemory | None = None,
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
