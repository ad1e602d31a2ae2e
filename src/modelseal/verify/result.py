"""What a verification concluded: per step, per requirement, and every refusal's cause.

Each class writes itself with ``to_dict`` (the ``modelseal verify --json`` document) and reads
that back with ``from_dict``: ``VerificationResult.from_dict(r.to_dict()) == r``. Reading
checks the shape and raises InputError naming the field; unknown fields are kept;
``verified`` is never read, it is derived (fail closed) from the steps and refusals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelseal.errors import InputError, VerificationError


def _field(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str,
           default: Any = None, required: bool = False) -> Any:
    """``d[key]`` when it is of ``kind`` (``default`` when absent); InputError otherwise."""
    if key not in d or d[key] is None:
        if required:
            raise InputError(f"{what}: {key} is missing")
        return default
    v = d[key]
    if not isinstance(v, kind) or (isinstance(v, bool) and kind is int):
        raise InputError(f"{what}: {key} is {type(v).__name__}, not the expected type")
    return v


def _strings(d: Mapping[str, Any], key: str, what: str) -> list[str]:
    v = _field(d, key, list, what, [])
    if not all(isinstance(x, str) for x in v):
        raise InputError(f"{what}: {key} must list strings")
    return list(v)


def _objects(d: Mapping[str, Any], key: str, what: str) -> list[Mapping[str, Any]]:
    v = _field(d, key, list, what, [])
    if not all(isinstance(x, Mapping) for x in v):
        raise InputError(f"{what}: {key} must list objects")
    return list(v)


def _mapping(d: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise InputError(f"{what} is not an object")
    return d


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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Refusal:
        """A refusal as ``to_dict`` wrote it."""
        d = _mapping(data, "refusal")
        return cls(_field(d, "message", str, "refusal", required=True),
                   *(_field(d, k, str, "refusal")
                     for k in ("step", "rule", "artifact", "key", "attestation")))

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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepOutcome:
        """A step's outcome as ``to_dict`` wrote it."""
        d = _mapping(data, "step")
        what = f"step {d.get('name')!r}"
        return cls(_field(d, "name", str, what, required=True),
                   _field(d, "threshold", int, what, required=True),
                   _field(d, "passed", bool, what, False),
                   _strings(d, "signers", what), _strings(d, "keyids", what),
                   _strings(d, "attestations", what), _strings(d, "identities", what))


@dataclass
class RequirementOutcome:
    name: str
    passed: bool
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RequirementOutcome:
        """A requirement's outcome as ``to_dict`` wrote it."""
        d = _mapping(data, "requirement")
        return cls(_field(d, "name", str, "requirement", required=True),
                   _field(d, "passed", bool, "requirement", required=True),
                   _field(d, "detail", str, "requirement", ""))


@dataclass
class Ignored:
    """An attestation that counted for nothing, and why (for the auditor)."""

    attestation: str
    reason: str
    predicate_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"attestation": self.attestation, "reason": self.reason,
                "predicateType": self.predicate_type}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ignored:
        """An ignored attestation as ``to_dict`` wrote it."""
        d = _mapping(data, "ignored attestation")
        what = "ignored attestation"
        return cls(_field(d, "attestation", str, what, required=True),
                   _field(d, "reason", str, what, required=True),
                   _field(d, "predicateType", str, what))


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
    unrecognized: dict[str, Any] = field(default_factory=dict)  # fields read, not known

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
            **self.unrecognized,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VerificationResult:
        """A result as ``to_dict`` (``modelseal verify --json``) wrote it. ``verified`` is not
        read: it follows from the steps and refusals, so an edited ``true`` changes nothing.
        Fields it does not know (a later version's) are kept and written back."""
        d = _mapping(data, "verification result")
        what = "verification result"
        return cls(
            subject=_field(d, "digest", str, what, required=True),
            ref=_field(d, "ref", str, what, ""),
            layout=_field(d, "layout", str, what, ""),
            layout_digest=_field(d, "layoutDigest", str, what, ""),
            verified_at=_field(d, "verifiedAt", str, what, ""),
            steps=[StepOutcome.from_dict(x) for x in _objects(d, "steps", what)],
            requirements=[RequirementOutcome.from_dict(x)
                          for x in _objects(d, "requirements", what)],
            refusals=[Refusal.from_dict(x) for x in _objects(d, "refusals", what)],
            warnings=_strings(d, "warnings", what),
            ignored=[Ignored.from_dict(x) for x in _objects(d, "ignored", what)],
            attestations_seen=_field(d, "attestations", int, what, 0),
            vsa=_field(d, "vsa", str, what),
            unrecognized={k: v for k, v in d.items() if k not in _RESULT_FIELDS},
        )

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


_RESULT_FIELDS = frozenset(VerificationResult(subject="").to_dict())  # "verified" too: derived
