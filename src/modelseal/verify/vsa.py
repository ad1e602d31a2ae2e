"""SLSA Verification Summary Attestations (VSA): what a verification decided, signed by the
verifier, attached to the verified model (only when it passed) and/or written to a file (a
FAILED summary too: it is a record).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelseal.formats import VSA_PREDICATE
from modelseal.oci.store import Store
from modelseal.refs import Ref
from modelseal.verify.policy import Policy
from modelseal.verify.result import VerificationResult

if TYPE_CHECKING:
    from securesystemslib.signer import Signer

VERIFIER_ID = "https://modelseal.dev/verifier/v1"


def vsa_statement(result: VerificationResult, ref: Ref, policy: Policy) -> dict[str, Any]:
    """A SLSA VSA v1 Statement about the model manifest, saying what was verified."""
    from importlib.metadata import PackageNotFoundError, version

    from modelseal.attest.statement import statement

    try:
        ver = version("modelseal")
    except PackageNotFoundError:
        ver = "unknown"
    policy_digest = {"sha256": policy.digest.partition(":")[2]} if policy.digest else {}
    inputs = []
    for step in result.steps:
        for att in step.attestations:
            inputs.append({"uri": f"{ref.base}@{att}", "digest": {"sha256": att.partition(":")[2]}})
    policy_doc: dict[str, Any] = {"uri": policy.source.removeprefix("policy "),
                                  "digest": policy_digest}
    if result.layout_digest:
        policy_doc["layout"] = {"uri": result.layout,
                                "digest": {"sha256": result.layout_digest.partition(":")[2]}}
    predicate = {
        "verifier": {"id": VERIFIER_ID, "version": {"modelseal": ver}},
        "timeVerified": result.verified_at,
        "resourceUri": f"{ref.base}@{result.subject}",
        "policy": policy_doc,
        "inputAttestations": inputs,
        "verificationResult": "PASSED" if result.verified else "FAILED",
        "verifiedLevels": ["MODELSEAL_LAYOUT_VERIFIED"] if result.verified else ["FAILED"],
        "dependencyLevels": {},
        "slsaVersion": "1.0",
    }
    return statement([(ref.base, result.subject)], VSA_PREDICATE, predicate)


def _attach(store: Store, result: VerificationResult, bundle: bytes) -> str:
    """Attach a VSA bundle to the verified manifest. Only a pass gets here: a FAILED summary
    next to the model would be one more attestation of the VSA type for a policy, or another
    tool, to mistake for a pass."""
    from modelseal.attest.attachments import attach_bundle, subject_of

    subject = subject_of(store, result.subject)
    attached = attach_bundle(store, subject, bundle, "verification summary")
    result.vsa = attached.descriptor.digest
    return attached.descriptor.digest


@dataclass(frozen=True)
class VsaOutcome:
    """The referrer holding the VSA (None: not attached) and the file written (None)."""

    attached: str | None
    written: Path | None


def publish_vsa(store: Store, ref: Ref, result: VerificationResult, policy: Policy,
                signer: Signer, *, attach: bool = False,
                output: str | os.PathLike[str] | None = None) -> VsaOutcome:
    """Sign the VSA of ``result`` once; attach it to the verified model (``attach``: only a
    pass, a refusal gets a warning in ``result.warnings`` instead) and write it atomically to
    ``output`` (a FAILED summary too). What ``verify --vsa-signer`` does."""
    from modelseal.attest.output import sign, write_file

    if attach and not result.verified:
        result.warnings.append("the verification summary was not attached: a refused "
                               "model gets no VSA next to it (use --vsa-output to keep "
                               "the FAILED summary)")
    attach = attach and result.verified
    if not attach and output is None:
        return VsaOutcome(None, None)  # nothing to sign for
    bundle = sign(vsa_statement(result, ref, policy), signer)
    attached = _attach(store, result, bundle) if attach else None
    written = write_file(bundle, output) if output is not None else None
    return VsaOutcome(attached, written)
