"""What a verification concluded: per step, per requirement, and every refusal's cause."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelseal.errors import VerificationError


@dataclass(frozen=True)
class Refusal:
    """One reason to refuse. ``message`` is complete on its own; the other fields let a
    program tell causes apart (``rule`` is an in-toto rule or a policy requirement name)."""

    message: str
    step: str | None = None
    rule: str | None = None
    artifact: str | None = None
    key: str | None = None  # the key's identity (key material, ``layout.key_identity``)
    attestation: str | None = None  # referrer (or bundle) digest

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("message", self.message), ("step", self.step),
                                  ("rule", self.rule), ("artifact", self.artifact),
                                  ("key", self.key), ("attestation", self.attestation))
                if v is not None}

    def __str__(self) -> str:
        return self.message


@dataclass
class StepOutcome:
    """One layout step: who signed it (counted towards its threshold) and whether it passed."""

    name: str
    threshold: int
    passed: bool = False
    signers: list[str] = field(default_factory=list)  # functionaries counted, for people
    keyids: list[str] = field(default_factory=list)  # a layout key id per counted signer
    attestations: list[str] = field(default_factory=list)
    identities: list[str] = field(default_factory=list)  # key material counted (key_identity)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "threshold": self.threshold, "passed": self.passed,
                "signers": list(self.signers), "keyids": list(self.keyids),
                "identities": list(self.identities),
                "attestations": list(self.attestations)}


@dataclass
class RequirementOutcome:
    name: str
    passed: bool
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass
class Ignored:
    """An attestation that counted for nothing, and why (for the auditor)."""

    attestation: str
    reason: str
    predicate_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"attestation": self.attestation, "reason": self.reason,
                "predicateType": self.predicate_type}


@dataclass
class VerificationResult:
    """The answer to "may this model run?"."""

    subject: str  # manifest digest
    ref: str = ""
    layout: str = ""  # where the layout came from
    layout_digest: str = ""
    verified_at: str = ""
    steps: list[StepOutcome] = field(default_factory=list)
    requirements: list[RequirementOutcome] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)
    attestations_seen: int = 0
    vsa: str | None = None  # digest of the attached verification summary, if any

    @property
    def verified(self) -> bool:
        # Fail closed: no refusal is not enough; every step must have been checked and passed.
        return not self.refusals and bool(self.steps) and all(s.passed for s in self.steps)

    def refuse(self, message: str, **where: str | None) -> None:
        self.refusals.append(Refusal(message, **where))

    def to_dict(self) -> dict[str, Any]:
        return {
            "verified": self.verified,
            "ref": self.ref,
            "digest": self.subject,
            "layout": self.layout,
            "layoutDigest": self.layout_digest,
            "verifiedAt": self.verified_at,
            "steps": [s.to_dict() for s in self.steps],
            "requirements": [r.to_dict() for r in self.requirements],
            "refusals": [r.to_dict() for r in self.refusals],
            "warnings": list(self.warnings),
            "ignored": [i.to_dict() for i in self.ignored],
            "attestations": self.attestations_seen,
            "vsa": self.vsa,
        }

    def summary(self) -> str:
        if self.verified:
            return f"verified {self.ref or self.subject}: all {len(self.steps)} steps passed"
        first = self.refusals[0].message
        more = f" (and {len(self.refusals) - 1} more)" if len(self.refusals) > 1 else ""
        return f"refused {self.ref or self.subject}: {first}{more}"

    def raise_for_refusal(self) -> None:
        """Raise VerificationError (exit code 10) with every reason, unless verified."""
        if not self.verified:
            raise VerificationError(self.summary(),
                                    reasons=[r.message for r in self.refusals])
