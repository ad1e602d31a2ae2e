"""The deployer's policy file, compiled into composable requirement objects.

A policy (YAML) names what the deployer trusts and requires::

    layout: layouts/ml-pipeline.signed.json   # or registry/repo@sha256:... (pinned)
    layout_keys: [keys/owner.pub]             # every one must have signed the layout
    trusted_root: production                  # Sigstore root for keyless: production |
                                              #   staging | path to trusted_root.json
    required_predicates:                      # besides the layout's steps
      - https://cyclonedx.org/bom
      - {type: https://slsa.dev/provenance/v1, step: train}
    distinct_signers: [[train, approve]]
    max_attestation_age: 90d
    required_stage: production                # or {stage: production, step: approve}
    model_safety: true                        # or {include_suspicious: true}

Unknown keys are a UsageError naming the key. Each requirement is an object with a ``check``
over the ``Facts`` the decision established (signatures already verified); ``AllOf`` composes
them, like sigstore-python's verification policies. Loading reads the YAML and key files;
checking does no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from modelseal.errors import InputError, UsageError
from modelseal.layout import parse_duration
from modelseal.verify.result import Refusal

if TYPE_CHECKING:
    from securesystemslib.signer import Key

BOM_PREDICATE = "https://cyclonedx.org/bom"
SAFETY_PREDICATE = "https://modelseal.dev/attestation/model-safety/v1"
LIFECYCLE_PREDICATE = "https://modelseal.dev/attestation/lifecycle/v1"
VSA_PREDICATE = "https://slsa.dev/verification_summary/v1"

POLICY_KEYS = ("version", "layout", "layout_keys", "trusted_root", "final_step",
               "required_predicates", "distinct_signers", "max_attestation_age",
               "required_stage", "model_safety")


# ---------------------------------------------------------------------------------------------
# facts the decision established


@dataclass(frozen=True)
class Attestation:
    """A Statement whose signature verified against a key of the layout."""

    id: str  # referrer manifest digest (or bundle digest)
    predicate_type: str
    statement: Mapping[str, Any] = field(repr=False)
    keyid: str
    signer: str  # for people: "key 1a2b..." or "sigstore identity ..."
    time: datetime | None = None
    time_signed: bool = False  # True when the time comes from signed data

    @property
    def subjects(self) -> list[tuple[str, str]]:
        out = []
        for s in self.statement.get("subject") or []:
            if isinstance(s, Mapping) and isinstance(s.get("digest"), Mapping):
                out.append((str(s.get("name", "")), str(s["digest"].get("sha256", ""))))
        return out

    @property
    def predicate(self) -> Mapping[str, Any]:
        p = self.statement.get("predicate")
        return p if isinstance(p, Mapping) else {}


@dataclass
class Facts:
    """What is established once signatures, thresholds and rules were checked."""

    manifest_digest: str
    files: Mapping[str, str]  # model filepath -> sha256 hex
    now: datetime
    attestations: list[Attestation] = field(default_factory=list)
    step_signers: dict[str, list[str]] = field(default_factory=dict)  # counted keyids
    step_attestations: dict[str, list[Attestation]] = field(default_factory=dict)
    step_keys: dict[str, list[str]] = field(default_factory=dict)  # layout pubkeys
    key_names: dict[str, str] = field(default_factory=dict)

    def name(self, keyid: str) -> str:
        return self.key_names.get(keyid, f"key {keyid[:16]}")

    def binding(self, att: Attestation) -> str | None:
        """None when every subject of ``att`` is this model (a file or the manifest);
        otherwise why not (an attestation copied from another model)."""
        subjects = att.subjects
        if not subjects:
            return "it has no sha256 subject"
        manifest_hex = self.manifest_digest.partition(":")[2]
        digests = set(self.files.values())
        for name, d in subjects:
            if d != manifest_hex and d not in digests:
                return (f"its subject {name or '(unnamed)'} sha256:{d[:16]}... is neither a "
                        f"file of this model nor its manifest {self.manifest_digest[:23]}...")
        return None


class Requirement(Protocol):
    """One thing the policy demands beyond the layout."""

    @property
    def name(self) -> str: ...

    def check(self, facts: Facts) -> list[Refusal]: ...


def _candidates(facts: Facts, predicate_type: str, step: str | None,
                what: str) -> tuple[list[Attestation], list[Refusal]]:
    """Attestations of a type, bound to this model and signed by an allowed key; and why the
    others do not count."""
    good, why = [], []
    allowed = set(facts.step_keys.get(step, [])) if step else None
    for att in facts.attestations:
        if att.predicate_type != predicate_type:
            continue
        if allowed is not None and att.keyid not in allowed:
            why.append(Refusal(f"{what}: attestation {att.id[:19]} is signed by "
                               f"{facts.name(att.keyid)}, not by a functionary of step {step}",
                               step=step, rule=what, key=att.keyid, attestation=att.id))
            continue
        unbound = facts.binding(att)
        if unbound:
            why.append(Refusal(f"{what}: attestation {att.id[:19]} is not about this model: "
                               f"{unbound} (copied from another model?)",
                               step=step, rule=what, attestation=att.id,
                               artifact=att.subjects[0][0] if att.subjects else None))
            continue
        good.append(att)
    return good, why


@dataclass(frozen=True)
class RequiredPredicate:
    """At least one attestation of ``predicate_type`` about this model, signed by a key of the
    layout (of ``step``'s functionaries when given)."""

    predicate_type: str
    step: str | None = None

    @property
    def name(self) -> str:
        return f"required predicate {self.predicate_type}" + (
            f" (signed for step {self.step})" if self.step else "")

    def check(self, facts: Facts) -> list[Refusal]:
        good, why = _candidates(facts, self.predicate_type, self.step, self.name)
        if good:
            return []
        if why:
            return why
        return [Refusal(f"{self.name}: no attestation of this type signed by a layout "
                        "functionary is attached to the model", step=self.step, rule=self.name)]


@dataclass(frozen=True)
class DistinctSigners:
    """No key counted for step ``a`` may be counted for step ``b`` (separation of duties)."""

    a: str
    b: str

    @property
    def name(self) -> str:
        return f"distinct signers {self.a}/{self.b}"

    def check(self, facts: Facts) -> list[Refusal]:
        shared = set(facts.step_signers.get(self.a, [])) & set(facts.step_signers.get(self.b, []))
        return [Refusal(f"{self.name}: {facts.name(k)} signed both {self.a} and {self.b}, "
                        "which the policy requires to be done by different people",
                        step=self.b, rule=self.name, key=k) for k in sorted(shared)]


@dataclass(frozen=True)
class MaxAge:
    """Every attestation that counted (steps and required predicates) is younger than this."""

    max_age: timedelta
    counted: Callable[[Facts], list[Attestation]] | None = None

    @property
    def name(self) -> str:
        return f"max attestation age {self.max_age}"

    def check(self, facts: Facts) -> list[Refusal]:
        atts = {a.id: a for step in facts.step_attestations.values() for a in step}
        if self.counted is not None:
            atts.update({a.id: a for a in self.counted(facts)})
        out = []
        for att in atts.values():
            step = next((s for s, lst in facts.step_attestations.items() if att in lst), None)
            if att.time is None:
                out.append(Refusal(f"{self.name}: attestation {att.id[:19]} has no time to "
                                   "judge its age by", step=step, rule=self.name,
                                   attestation=att.id))
            elif facts.now - att.time > self.max_age:
                src = "signed" if att.time_signed else "recorded"
                out.append(Refusal(
                    f"{self.name}: attestation {att.id[:19]}"
                    + (f" for step {step}" if step else "")
                    + f" was {src} at {att.time.isoformat()}, older than {self.max_age}",
                    step=step, rule=self.name, attestation=att.id, key=att.keyid))
        return out


@dataclass(frozen=True)
class RequiredStage:
    """The latest lifecycle attestation about this model puts it in ``stage``."""

    stage: str
    step: str | None = None

    @property
    def name(self) -> str:
        return f"required stage {self.stage}"

    def check(self, facts: Facts) -> list[Refusal]:
        good, why = _candidates(facts, LIFECYCLE_PREDICATE, self.step, self.name)
        if not good:
            return why or [Refusal(f"{self.name}: no lifecycle attestation "
                                   f"({LIFECYCLE_PREDICATE}) signed by a layout functionary",
                                   rule=self.name, step=self.step)]
        latest = max(good, key=lambda a: (a.time is not None, a.time or facts.now))
        stage = latest.predicate.get("stage")
        if stage != self.stage:
            return [Refusal(f"{self.name}: the model's latest lifecycle stage is {stage!r} "
                            f"(attestation {latest.id[:19]} by {facts.name(latest.keyid)})",
                            rule=self.name, key=latest.keyid, attestation=latest.id)]
        return []


def _default_unsafe_findings() -> Callable[..., list[str]]:
    from modelseal.safety import unsafe_findings

    return unsafe_findings


@dataclass(frozen=True)
class ModelSafety:
    """A model-safety attestation about every file of this model reports nothing unsafe, and
    no code-executing file the scanner could not prove safe (verdict ``unknown`` with
    ``codeExecuting``). ``include_suspicious`` also refuses ``suspicious`` files,
    ``include_unknown`` every ``unknown`` file (formats the scanner does not analyse).

    ``findings`` is the pure check run on the predicate (``modelseal.safety.unsafe_findings``
    by default): a hook, so another scanner's predicate can be plugged in."""

    include_suspicious: bool = False
    step: str | None = None
    predicate_type: str = SAFETY_PREDICATE
    findings: Callable[..., list[str]] | None = None
    include_unknown: bool = False

    @property
    def name(self) -> str:
        return "model safety"

    def check(self, facts: Facts) -> list[Refusal]:
        good, why = _candidates(facts, self.predicate_type, self.step, self.name)
        if not good:
            return why or [Refusal(f"{self.name}: no model-safety attestation "
                                   f"({self.predicate_type}) signed by a layout functionary",
                                   rule=self.name, step=self.step)]
        fn = self.findings or _default_unsafe_findings()
        out: list[Refusal] = []
        wanted = set(facts.files.values())
        for att in good:
            covered = {d for _, d in att.subjects}
            missing = [p for p, d in facts.files.items() if d not in covered]
            if missing:
                out.append(Refusal(f"{self.name}: scan {att.id[:19]} does not cover "
                                   f"{', '.join(sorted(missing)[:5])}", rule=self.name,
                                   artifact=sorted(missing)[0], attestation=att.id))
                continue
            problems = fn(dict(att.predicate), include_suspicious=self.include_suspicious,
                          include_unknown=self.include_unknown)
            if problems:
                out.extend(Refusal(f"{self.name}: {p}", rule=self.name, attestation=att.id,
                                   artifact=p.split(" ")[0]) for p in problems)
                continue
            if covered & wanted:
                return []
        return out


@dataclass(frozen=True)
class AllOf:
    """Every requirement must hold; all refusals are reported."""

    requirements: Sequence[Requirement]

    @property
    def name(self) -> str:
        return "all of: " + ", ".join(r.name for r in self.requirements)

    def check(self, facts: Facts) -> list[Refusal]:
        return [x for r in self.requirements for x in r.check(facts)]


# ---------------------------------------------------------------------------------------------
# the policy file


@dataclass
class Policy:
    """A loaded policy: what to trust, and the extra requirements."""

    layout: str  # a file path (absolute) or an OCI reference pinned by digest
    layout_keys: dict[str, Key]
    trusted_root: str = "production"
    final_step: str | None = None
    requirements: list[Requirement] = field(default_factory=list)
    source: str = ""
    distinct_pairs: list[tuple[str, str]] = field(default_factory=list)
    digest: str = ""  # sha256 of the policy file, for the verification summary

    @property
    def layout_is_oci(self) -> bool:
        return not Path(self.layout).is_absolute() and is_oci_ref(self.layout)

    def requirement(self) -> AllOf:
        return AllOf(list(self.requirements))

    def predicate_types(self) -> set[str]:
        """Predicate types the requirements look at (besides the layout's steps)."""
        out: set[str] = set()
        for r in self.requirements:
            if isinstance(r, (RequiredPredicate, ModelSafety)):
                out.add(r.predicate_type)
            elif isinstance(r, RequiredStage):
                out.add(LIFECYCLE_PREDICATE)
        return out


def is_oci_ref(text: str) -> bool:
    """A registry or oci: reference rather than a file path."""
    if text.startswith("oci:"):
        return True
    head = text.split("/", 1)[0]
    return "/" in text and head not in ("", ".", "..") and (
        "." in head or ":" in head or head == "localhost")


def _unknown(d: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for k in d:
        if k not in allowed:
            raise UsageError(f"{where}: unknown key {k!r}",
                             hint="allowed keys: " + ", ".join(allowed))


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v:
        raise UsageError(f"{where} must be a non-empty string")
    return v


def compile_policy(data: Mapping[str, Any], *, base_dir: Path | None = None,
                   source: str = "policy",
                   load_key: Callable[[str], Key] | None = None) -> Policy:
    """A Policy from parsed YAML. Relative paths are relative to ``base_dir``."""
    from modelseal.layout import load_functionary_key

    if not isinstance(data, Mapping):
        raise UsageError(f"{source}: a policy is a YAML mapping")
    _unknown(data, POLICY_KEYS, source)
    if data.get("version", 1) != 1:
        raise UsageError(f"{source}: version {data.get('version')!r} is not supported (1)")
    base = base_dir or Path.cwd()

    def path(p: str) -> str:
        return p if Path(p).is_absolute() else str(base / p)

    layout = _str(data.get("layout"), f"{source}: layout")
    if not Path(path(layout)).exists() and is_oci_ref(layout):
        if "@sha256:" not in layout:
            raise UsageError(f"{source}: layout {layout!r} is not a file, and as an OCI "
                             "reference it must be pinned by digest (REF@sha256:...): a tag "
                             "can move")
    else:
        layout = path(layout)
    trusted_root = data.get("trusted_root", "production")
    trusted_root = _str(trusted_root, f"{source}: trusted_root")
    if trusted_root not in ("production", "staging"):
        trusted_root = path(trusted_root)
    final_step = data.get("final_step")
    if final_step is not None:
        final_step = _str(final_step, f"{source}: final_step")

    reqs: list[Requirement] = []
    for item in data.get("required_predicates") or []:
        if isinstance(item, str):
            reqs.append(RequiredPredicate(item))
        elif isinstance(item, Mapping):
            _unknown(item, ("type", "step"), f"{source}: required_predicates entry")
            reqs.append(RequiredPredicate(_str(item.get("type"), f"{source}: type"),
                                          item.get("step")))
        else:
            raise UsageError(f"{source}: required_predicates entries are URIs or "
                             "{type, step} mappings")
    pairs: list[tuple[str, str]] = []
    for pair in data.get("distinct_signers") or []:
        if not (isinstance(pair, list) and len(pair) == 2
                and all(isinstance(x, str) for x in pair)):
            raise UsageError(f"{source}: distinct_signers entries are [STEP, STEP] pairs, "
                             f"got {pair!r}")
        pairs.append((pair[0], pair[1]))
        reqs.append(DistinctSigners(pair[0], pair[1]))
    stage = data.get("required_stage")
    if isinstance(stage, str):
        reqs.append(RequiredStage(stage))
    elif isinstance(stage, Mapping):
        _unknown(stage, ("stage", "step"), f"{source}: required_stage")
        reqs.append(RequiredStage(_str(stage.get("stage"), f"{source}: required_stage.stage"),
                                  stage.get("step")))
    elif stage is not None:
        raise UsageError(f"{source}: required_stage is a stage name or {{stage, step}}")
    safety = data.get("model_safety")
    if safety is True:
        reqs.append(ModelSafety())
    elif isinstance(safety, Mapping):
        _unknown(safety, ("include_suspicious", "include_unknown", "step", "predicate_type"),
                 f"{source}: model_safety")
        for flag in ("include_suspicious", "include_unknown"):
            if not isinstance(safety.get(flag, False), bool):
                raise UsageError(f"{source}: model_safety.{flag} is true or false")
        reqs.append(ModelSafety(bool(safety.get("include_suspicious", False)),
                                safety.get("step"),
                                str(safety.get("predicate_type") or SAFETY_PREDICATE),
                                include_unknown=bool(safety.get("include_unknown", False))))
    elif safety not in (None, False):
        raise UsageError(f"{source}: model_safety is true, false or a mapping")
    age = data.get("max_attestation_age")
    if age is not None:
        extra = [r for r in reqs if isinstance(r, RequiredPredicate)]

        def counted(facts: Facts, extra: list[RequiredPredicate] = extra) -> list[Attestation]:
            out = []
            for r in extra:
                out += _candidates(facts, r.predicate_type, r.step, r.name)[0]
            return out

        reqs.append(MaxAge(parse_duration(age), counted))
    raw_keys = data.get("layout_keys")
    if isinstance(raw_keys, str):
        raw_keys = [raw_keys]
    if not isinstance(raw_keys, list) or not raw_keys:
        raise UsageError(f"{source}: layout_keys must list at least one public key")
    loader = load_key or load_functionary_key
    keys: dict[str, Key] = {}
    for spec in raw_keys:
        s = _str(spec, f"{source}: layout_keys entry")
        if s.startswith("sigstore:"):
            raise UsageError(f"{source}: layout_keys {s!r}: keyless layout signatures are not "
                             "supported; sign the layout with a key (file, HSM or KMS)")
        k = loader(s if ":" in s and not Path(path(s)).exists() else path(s))
        keys[k.keyid] = k
    return Policy(layout, keys, trusted_root, final_step, reqs, source, pairs)


def load_policy(path: str | Path) -> Policy:
    """Read and compile a policy file (YAML or JSON)."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError as e:
        raise UsageError(f"policy {p}: no such file") from e
    except OSError as e:
        raise InputError(f"policy {p} cannot be read: {e.strerror or e}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UsageError(f"policy {p} is not valid YAML: {e}") from e
    policy = compile_policy(data or {}, base_dir=p.resolve().parent, source=f"policy {p}")
    policy.digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return policy
