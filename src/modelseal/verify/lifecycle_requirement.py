"""The lifecycle as a requirement of the deployer's policy (``verify.requirements.Requirement``).

``check(facts)`` is pure: it judges the lifecycle Statements the decision already verified
(``facts.attestations``), with what the I/O layer handed over beforehand in ``prepare``:

- the lifecycle rules of the *verified* layout (who may sign which transition);
- the RFC 3161 times of the evidence, verified against the policy's TSA certificates;
- the head this verifier remembers for the model (a ``LifecycleMemory``, such as
  ``lifecycle.state.StateStore``), and the tag the model was resolved from.

After the decision, ``finish`` copies warnings (e.g. "deprecated") into the result and, when the
model verified, moves the remembered head forward.

Policy keys (``compile_lifecycle``)::

    required_stage: production        # or {stage: production, step: approve} (see below)
    stage_max_age: 30d                # the stage was affirmed (promoted) within this time
    deprecated: refuse                # warn (default) | refuse
    require_trusted_time: true        # ages only by TSA time (default false: say so, warn)
    trusted_tsa: [certs/tsa-ca.pem]   # TSA certificates whose timestamps count
    check_tag: true                   # default true: a tag must be the model's release tag

Who may sign which transition comes from the layout's ``modelseal.lifecycle`` section. For a
layout without one, ``required_stage: {step: S}`` lets any one functionary of step S sign
every transition.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from modelseal.attest.lifecycle import record_digest, record_of_statement
from modelseal.errors import InputError, UsageError
from modelseal.formats import LIFECYCLE_PREDICATE
from modelseal.verify.lifecycle_chain import (
    RULE_STAGE,
    ChainState,
    LifecycleOptions,
    LifecycleRules,
    LifecycleView,
    SignedRecord,
    TagRelease,
    TransitionRule,
    check_requirements,
    evaluate,
)
from modelseal.verify.result import Refusal

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

    from modelseal.attest.tsa import TrustedTime
    from modelseal.intoto_layout.model import TrustedLayout
    from modelseal.verify.decision import Evidence
    from modelseal.verify.requirements import Facts
    from modelseal.verify.result import VerificationResult

LIFECYCLE_POLICY_KEYS = ("required_stage", "stage_max_age", "deprecated",
                         "require_trusted_time", "trusted_tsa", "check_tag")


class LifecycleMemory(Protocol):
    """What a verifier remembers per model and per tag, so that nothing moves backwards
    (``lifecycle.state.StateStore`` keeps it in a directory)."""

    def load(self, model_digest: str) -> ChainState | None: ...

    def save(self, model_digest: str, state: ChainState) -> bool: ...

    def load_tag(self, repository: str, tag: str) -> TagRelease | None: ...

    def save_tag(self, repository: str, tag: str, release: TagRelease) -> bool: ...


@dataclass
class LifecycleRequirement:
    """Stage, deprecation, retirement, freshness, rollback and tag checks over the lifecycle
    chain. Fails closed: without ``prepare`` (no layout rules) it refuses."""

    options: LifecycleOptions
    tsa_roots: list[Certificate] = field(default_factory=list)
    check_tag: bool = True
    rules: LifecycleRules | None = None
    key_materials: dict[str, str] = field(default_factory=dict)  # layout keyid -> material
    times: dict[str, TrustedTime] = field(default_factory=dict)  # evidence id -> TSA time
    known: dict[str, ChainState] = field(default_factory=dict)  # model digest -> head seen
    tag: str | None = None
    views: dict[str, LifecycleView] = field(default_factory=dict)  # outcome per model
    step: str | None = None  # layouts without a lifecycle section: this step's keys, 1 of n
    repository: str | None = None
    known_tag: TagRelease | None = None

    @property
    def name(self) -> str:
        parts = []
        if self.options.required_stage:
            parts.append(f"stage {self.options.required_stage}")
        if self.options.stage_max_age:
            parts.append(f"affirmed within {self.options.stage_max_age}")
        return "lifecycle" + (f" ({', '.join(parts)})" if parts else "")

    # ---- before the decision (the pipeline, which has the bytes) ---------------------------

    def prepare(self, *, layout: TrustedLayout | None, evidence: Sequence[Evidence],
                model_digest: str, state: LifecycleMemory | None = None,
                tag: str | None = None, repository: str | None = None) -> None:
        """Bind the verified layout's rules (``Verifier.layout``), verify the evidence's TSA
        times, load the remembered head. No verified layout binds nothing (check refuses)."""
        from modelseal.attest.tsa import verified_times_of_bundle
        from modelseal.verify.lifecycle_records import layout_key_materials, rules_from_layout

        self.rules = None  # the decision refuses an unverified layout itself, with the reason
        if layout is not None:
            try:
                self.rules = rules_from_layout(layout)
                self.key_materials = layout_key_materials(layout)
                if not self.rules.transitions and self.step:
                    self.rules = _rules_of_step(layout, self.step, self.key_materials,
                                                self.rules)
            except InputError:
                self.rules = None
        if self.tsa_roots:
            for ev in evidence:
                t = verified_times_of_bundle(ev.bundle, self.tsa_roots).earliest
                if t is not None:
                    self.times[ev.id] = t
        if state is not None:
            known = state.load(model_digest)
            if known is not None:
                self.known[model_digest] = known
        self.tag = tag if self.check_tag else None
        self.repository = repository
        if state is not None and self.tag and repository:
            self.known_tag = state.load_tag(repository, self.tag)

    # ---- the requirement -------------------------------------------------------------------

    def check(self, facts: Facts) -> list[Refusal]:
        if self.rules is None:
            return [Refusal(f"{self.name}: the layout's lifecycle rules were not loaded",
                            rule=RULE_STAGE)]
        records: list[SignedRecord] = []
        skipped: list[tuple[str, str]] = []
        for att in facts.attestations:
            if att.predicate_type != LIFECYCLE_PREDICATE:
                continue
            try:
                rec = record_of_statement(att.statement)
            except InputError as e:
                skipped.append((att.id, f"malformed lifecycle record: {e.message}"))
                continue
            material = att.who  # the key material the decision counted
            tt = self.times.get(att.id)
            records.append(SignedRecord(
                rec, record_digest(att.statement), att.id, material,
                self.rules.names.get(material, att.signer),
                tt.time if tt else None, tt.tsa if tt else None))
        step_signers = {s: list(ks) for s, ks in facts.step_signers.items()}
        opts = replace(self.options, tag=self.tag)
        view = evaluate(records, self.rules, model_digest=facts.manifest_digest, now=facts.now,
                        options=opts, known=self.known.get(facts.manifest_digest),
                        step_signers=step_signers)
        view.ignored[:0] = skipped
        check_requirements(view, opts, facts.now, self.known_tag)
        self.views[facts.manifest_digest] = view
        return [replace(r, message=f"{self.name}: {r.message}") for r in view.refusals]

    # ---- after the decision ------------------------------------------------------------------

    def finish(self, result: VerificationResult, state: LifecycleMemory | None = None) -> None:
        """Warnings into the result; remember the chain's head when its integrity held
        (also when the model is refused for its stage: a retirement seen is remembered)."""
        view = self.views.get(result.subject)
        if view is None:
            return
        result.warnings.extend(view.warnings)
        head = view.state()
        if state is not None and head is not None:
            state.save(result.subject, head)
        if state is not None and result.verified and view.tag_release is not None \
                and self.tag and self.repository:
            state.save_tag(self.repository, self.tag, view.tag_release)


def _rules_of_step(tl: TrustedLayout, step: str, materials: Mapping[str, str],
                   base: LifecycleRules) -> LifecycleRules:
    """``required_stage: {step: S}`` with a layout that has no lifecycle section: any one
    functionary of step S may sign every transition (the pre-lifecycle-section behaviour)."""
    keys = next((s.pubkeys for s in tl.layout.steps if s.name == step), None)
    if not keys:
        return base
    signers = frozenset(materials[k] for k in keys if k in materials)
    return LifecycleRules({n: TransitionRule(n, signers, 1)
                           for n in ("promote:*", "deprecate", "retire", "correct")},
                          base.names)


def compile_lifecycle(data: Mapping[str, Any], *, source: str = "policy",
                      path: Callable[[str], str] = str) -> LifecycleRequirement | None:
    """The lifecycle requirement of a parsed policy (None when it asks for nothing)."""
    from modelseal._util.time import parse_duration
    from modelseal.attest.tsa import load_tsa_certificates

    if not any(k in data for k in LIFECYCLE_POLICY_KEYS):
        return None
    stage = data.get("required_stage")
    step = None
    if isinstance(stage, Mapping):
        unknown = [k for k in stage if k not in ("stage", "step")]
        if unknown:
            raise UsageError(f"{source}: required_stage: unknown key {unknown[0]!r}")
        step = stage.get("step")
        if step is not None and (not isinstance(step, str) or not step):
            raise UsageError(f"{source}: required_stage.step is a step name")
        stage = stage.get("stage")
    if stage is not None and (not isinstance(stage, str) or not stage):
        raise UsageError(f"{source}: required_stage is a stage name or {{stage: NAME}}")
    dep = data.get("deprecated", "warn")
    if dep not in ("warn", "refuse"):
        raise UsageError(f"{source}: deprecated is warn or refuse, not {dep!r}")
    age = data.get("stage_max_age")
    tsa = data.get("trusted_tsa") or []
    if isinstance(tsa, str):
        tsa = [tsa]
    if not isinstance(tsa, list) or not all(isinstance(t, str) for t in tsa):
        raise UsageError(f"{source}: trusted_tsa lists PEM certificate files")
    rtt = data.get("require_trusted_time", False)
    if not isinstance(rtt, bool):
        raise UsageError(f"{source}: require_trusted_time is true or false")
    if rtt and not tsa:
        raise UsageError(f"{source}: require_trusted_time needs trusted_tsa certificates")
    check_tag = data.get("check_tag", True)
    if not isinstance(check_tag, bool):
        raise UsageError(f"{source}: check_tag is true or false")
    opts = LifecycleOptions(required_stage=stage, refuse_deprecated=dep == "refuse",
                            stage_max_age=parse_duration(age) if age is not None else None,
                            require_trusted_time=rtt)
    return LifecycleRequirement(opts, load_tsa_certificates([path(t) for t in tsa]),
                                check_tag=check_tag, step=step)
