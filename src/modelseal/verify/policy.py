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
    required_stage: production                # lifecycle (docs/lifecycle.md): also
    stage_max_age: 30d                        #   deprecated, require_trusted_time,
                                              #   trusted_tsa, check_tag
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

from modelseal._util.json import check_value, type_name
from modelseal._util.limits import MAX_METADATA_BYTES
from modelseal.errors import InputError, UsageError
from modelseal.formats import (
    LIFECYCLE_PREDICATE,
    SAFETY_PREDICATE,
    TEST_RESULT_PREDICATE,
    VSA_PREDICATE,
)
from modelseal.intoto_layout.model import parse_duration
from modelseal.lifecycle.requirement import (
    LIFECYCLE_POLICY_KEYS,
    LifecycleRequirement,
    compile_lifecycle,
)
from modelseal.refs import is_reference
from modelseal.verify.result import Refusal

if TYPE_CHECKING:
    from securesystemslib.signer import Key


POLICY_KEYS = ("version", "layout", "layout_keys", "trusted_root", "final_step",
               "required_predicates", "distinct_signers", "max_attestation_age",
               "model_safety", *LIFECYCLE_POLICY_KEYS)


# ---------------------------------------------------------------------------------------------
# facts the decision established


@dataclass(frozen=True)
class Attestation:
    """A Statement whose signature verified against a key of the layout."""

    id: str  # referrer manifest digest (or bundle digest)
    predicate_type: str
    statement: Mapping[str, Any] = field(repr=False)
    keyid: str  # the layout key id that verified (one spelling of the key: not its identity)
    signer: str  # for people: "trainer (key 1a2b...)" or "sigstore identity ..."
    time: datetime | None = None
    time_signed: bool = False  # True when the time comes from signed data
    identity: str = ""  # the key material (layout.key_identity): what is counted

    @property
    def who(self) -> str:
        """The signer's identity: what thresholds and separation of duties count."""
        return self.identity or self.keyid

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


def not_passed(predicate_type: str, statement: Mapping[str, Any],
               return_values: Sequence[int] = (0,)) -> str | None:
    """Why this evidence does not say it passed, or None when it does (or has no notion of
    passing, like a BOM or a provenance). The one place that reads verdicts:

    - a link: its command's ``byproducts.return-value`` must be one the layout accepts
      (default 0); a link without one (``in-toto-record``) ran no command to fail;
    - a test result: ``result`` PASSED, no failed tests, and every declared threshold holds
      for the metrics it carries;
    - a VSA: ``verificationResult`` PASSED;
    - a model-safety scan: ``result`` PASSED (ModelSafety also reads its findings).
    """
    from modelseal.formats import LINK_PREDICATE

    pred = statement.get("predicate")
    pred = pred if isinstance(pred, Mapping) else {}
    if predicate_type == LINK_PREDICATE:
        by = pred.get("byproducts")
        rv = by.get("return-value") if isinstance(by, Mapping) else None
        if rv is None:
            return None
        if isinstance(rv, bool) or not isinstance(rv, int) or rv not in return_values:
            return (f"its command exited with return value {rv!r}, not "
                    + " or ".join(map(str, return_values)))
        return None
    if predicate_type == TEST_RESULT_PREDICATE:
        if pred.get("result") != "PASSED":
            return f"its result is {pred.get('result')!r}, not PASSED"
        if pred.get("failedTests"):
            return f"it lists failed tests ({', '.join(map(str, pred['failedTests']))[:200]})"
        return _thresholds_missed(pred)
    if predicate_type == VSA_PREDICATE:
        if pred.get("verificationResult") != "PASSED":
            return f"its verificationResult is {pred.get('verificationResult')!r}, not PASSED"
        return None
    if predicate_type == SAFETY_PREDICATE and "result" in pred and pred["result"] != "PASSED":
        return f"its result is {pred.get('result')!r}, not PASSED"
    return None


def _thresholds_missed(pred: Mapping[str, Any]) -> str | None:
    """Re-check a test result's declared thresholds against its own metrics."""
    from modelseal.attest.statement import Threshold, evaluate

    raw, metrics = pred.get("thresholds"), pred.get("metrics")
    if raw is None:
        return None
    if not isinstance(raw, list) or not isinstance(metrics, Mapping):
        return "its thresholds or metrics cannot be read"
    try:
        ts = [Threshold(str(t["metric"]), str(t["op"]), float(t["value"])) for t in raw]
        failed = evaluate(metrics, ts)[1]
    except (KeyError, TypeError, ValueError):
        return "its thresholds cannot be read"
    return f"its metrics miss thresholds: {', '.join(failed)}" if failed else None


@dataclass
class Facts:
    """What is established once signatures, thresholds and rules were checked. Signers are
    key identities (``layout.key_identity``), never key ids."""

    manifest_digest: str
    files: Mapping[str, str]  # model filepath -> sha256 hex
    now: datetime
    attestations: list[Attestation] = field(default_factory=list)
    step_signers: dict[str, list[str]] = field(default_factory=dict)  # counted identities
    step_attestations: dict[str, list[Attestation]] = field(default_factory=dict)
    step_keys: dict[str, list[str]] = field(default_factory=dict)  # authorized identities
    key_names: dict[str, str] = field(default_factory=dict)  # identity -> for people
    return_values: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def name(self, identity: str) -> str:
        return self.key_names.get(identity, f"key {identity.partition(':')[2][:16] or identity}")

    def binding(self, att: Attestation) -> str | None:
        """None when ``att`` is about this model: every subject is a file of it or its
        manifest, and together they cover it (the manifest digest, or every file). Otherwise
        why not: copied from another model, or about a part of it only (an evaluation of v1
        is no evaluation of a v2 that adds a file)."""
        subjects = att.subjects
        if not subjects:
            return "it has no sha256 subject"
        manifest_hex = self.manifest_digest.partition(":")[2]
        digests = set(self.files.values())
        for name, d in subjects:
            if d != manifest_hex and d not in digests:
                return (f"its subject {name or '(unnamed)'} sha256:{d[:16]}... is neither a "
                        f"file of this model nor its manifest {self.manifest_digest[:23]}...")
        covered = {d for _, d in subjects}
        if manifest_hex in covered:
            return None
        missing = sorted(p for p, d in self.files.items() if d not in covered)
        if missing:
            return (f"it does not cover the whole model: {', '.join(missing[:5])}"
                    + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                    + " not among its subjects")
        return None

    def uncovered(self, att: Attestation) -> str | None:
        """The first model file ``att`` does not cover (for a refusal's artifact)."""
        covered = {d for _, d in att.subjects}
        if self.manifest_digest.partition(":")[2] in covered:
            return None
        return next((p for p, d in sorted(self.files.items()) if d not in covered), None)


class Requirement(Protocol):
    """One thing the policy demands beyond the layout."""

    @property
    def name(self) -> str: ...

    def check(self, facts: Facts) -> list[Refusal]: ...


def _candidates(facts: Facts, predicate_type: str, step: str | None,
                what: str) -> tuple[list[Attestation], list[Refusal]]:
    """Every attestation of a type that covers this model and is signed by an allowed key
    (a functionary of ``step``, or any layout key); and why the others do not count.

    All covering candidates are returned: choosing among them is the requirement's job, and
    ``settle`` is how: a candidate that did not pass is a refusal even next to one that did
    (contradicting evidence is never a choice)."""
    good, why = [], []
    allowed = set(facts.step_keys.get(step, [])) if step else None
    for att in facts.attestations:
        if att.predicate_type != predicate_type:
            continue
        if allowed is not None and att.who not in allowed:
            why.append(Refusal(f"{what}: attestation {att.id[:19]} is signed by "
                               f"{facts.name(att.who)}, not by a functionary of step {step}",
                               step=step, rule=what, key=att.who, attestation=att.id))
            continue
        unbound = facts.binding(att)
        if unbound:
            why.append(Refusal(f"{what}: attestation {att.id[:19]} is not about this model: "
                               f"{unbound}", step=step, rule=what, attestation=att.id,
                               key=att.who, artifact=facts.uncovered(att) or (
                                   att.subjects[0][0] if att.subjects else None)))
            continue
        good.append(att)
    return good, why


Verdict = Callable[["Attestation"], "str | list[Refusal] | None"]


def settle(what: str, facts: Facts, good: Sequence[Attestation], why: Sequence[Refusal],
           step: str | None = None, verdict: Verdict | None = None) -> list[Refusal]:
    """The refusals of a requirement over its candidates (from ``_candidates``): none when at
    least one candidate counts and every candidate passed. ``verdict`` says why one did not
    (a reason, or the refusals themselves, e.g. one per unsafe file), default ``not_passed``.

    A failed candidate is a refusal whatever else passed: a PASSED report by one functionary
    never cancels another's FAILED one. No candidate is a refusal: nothing passes vacuously."""
    judge = verdict or (lambda a: not_passed(a.predicate_type, a.statement))
    out: list[Refusal] = []
    failed = 0
    for a in good:
        w = judge(a)
        if not w:
            continue
        failed += 1
        if isinstance(w, str):
            out.append(Refusal(f"{what}: attestation {a.id[:19]} by {facts.name(a.who)} does "
                               f"not say it passed: {w}", step=step, rule=what, key=a.who,
                               attestation=a.id))
        else:
            out.extend(w)
    if out and failed < len(good):
        out.append(Refusal(f"{what}: {len(good) - failed} attestation(s) passed and {failed} "
                           "did not: contradicting evidence is refused, never chosen between",
                           step=step, rule=what))
    if out or good:
        return out
    return list(why) or [Refusal(f"{what}: no attestation of this type signed by a layout "
                                 "functionary is attached to the model", step=step, rule=what)]


@dataclass(frozen=True)
class RequiredPredicate:
    """Attestations of ``predicate_type`` about this model, signed by a key of the layout
    (of ``step``'s functionaries when given): at least one, and every one passed."""

    predicate_type: str
    step: str | None = None

    @property
    def name(self) -> str:
        return f"required predicate {self.predicate_type}" + (
            f" (signed for step {self.step})" if self.step else "")

    def check(self, facts: Facts) -> list[Refusal]:
        good, why = _candidates(facts, self.predicate_type, self.step, self.name)
        return settle(self.name, facts, good, why, self.step)


@dataclass(frozen=True)
class DistinctSigners:
    """No key material counted for step ``a`` may be counted for step ``b`` (separation of
    duties). Both steps must have counted signers: an unproven separation is no separation."""

    a: str
    b: str

    @property
    def name(self) -> str:
        return f"distinct signers {self.a}/{self.b}"

    @property
    def steps(self) -> tuple[str, ...]:
        return (self.a, self.b)

    def check(self, facts: Facts) -> list[Refusal]:
        out = [Refusal(f"{self.name}: step {s} has no counted signer, so separation of duties "
                       "cannot be shown", step=s, rule=self.name)
               for s in (self.a, self.b) if not facts.step_signers.get(s)]
        shared = set(facts.step_signers.get(self.a, [])) & set(facts.step_signers.get(self.b, []))
        return out + [Refusal(f"{self.name}: {facts.name(k)} signed both {self.a} and {self.b}, "
                              "which the policy requires to be done by different people",
                              step=self.b, rule=self.name, key=k) for k in sorted(shared)]


@dataclass(frozen=True)
class MaxAge:
    """Every attestation that counted (steps and required predicates) and carries a signed
    time was signed less than ``max_age`` ago, and at least one did (nothing passes
    vacuously). Only signed times count: a registry's ``created`` annotation is a hint that
    whoever writes to the registry sets. Counted attestations without a signed time (keyed
    links) have no age to judge: ``notes`` names them."""

    max_age: timedelta
    counted: Callable[[Facts], list[Attestation]] | None = None

    @property
    def name(self) -> str:
        return f"max attestation age {self.max_age}"

    def _atts(self, facts: Facts) -> dict[str, Attestation]:
        atts = {a.id: a for step in facts.step_attestations.values() for a in step}
        if self.counted is not None:
            atts.update({a.id: a for a in self.counted(facts)})
        return atts

    def notes(self, facts: Facts) -> list[str]:
        """Warnings: the counted attestations whose age cannot be judged."""
        timeless = [a for a in self._atts(facts).values() if not a.time_signed]
        if not timeless:
            return []
        return [f"{self.name}: {len(timeless)} counted attestation(s) carry no signed time "
                "(keyed links have none; sign keylessly or require time-carrying predicates "
                "to bound them): " + ", ".join(a.id[:19] for a in timeless[:5])]

    def check(self, facts: Facts) -> list[Refusal]:
        dated = [a for a in self._atts(facts).values() if a.time_signed and a.time is not None]
        if not dated:
            return [Refusal(f"{self.name}: no counted attestation carries a signed time, so "
                            "there is no age to judge (the registry's created annotations are "
                            "not signed)", rule=self.name)]
        out = []
        for att in dated:
            assert att.time is not None
            step = next((s for s, lst in facts.step_attestations.items() if att in lst), None)
            if facts.now - att.time > self.max_age:
                out.append(Refusal(
                    f"{self.name}: attestation {att.id[:19]}"
                    + (f" for step {step}" if step else "")
                    + f" was signed at {att.time.isoformat()}, older than {self.max_age}",
                    step=step, rule=self.name, attestation=att.id, key=att.who))
        return out


def named_steps(req: Requirement) -> list[tuple[str, str]]:
    """(step, requirement name) for every step a requirement names, to check against the
    layout: a misspelt step must be a bad policy, never a check silently turned off."""
    if isinstance(req, AllOf):
        return [x for r in req.requirements for x in named_steps(r)]
    steps = getattr(req, "steps", None)
    if steps is None:
        one = getattr(req, "step", None)
        steps = (one,) if one else ()
    return [(str(s), req.name) for s in steps if s]


def check_policy_steps(req: Requirement | None, final_step: str | None,
                       layout_steps: Sequence[str], source: str = "policy") -> None:
    """Raise UsageError (exit 2) naming every step the policy names and the layout lacks."""
    have = set(layout_steps)
    named = named_steps(req) if req is not None else []
    if final_step:
        named.append((final_step, "final_step"))
    bad = [(s, where) for s, where in named if s not in have]
    if bad:
        import difflib

        def near(s: str) -> str:
            m = difflib.get_close_matches(s, sorted(have), n=1)
            return f" (did you mean {m[0]!r}?)" if m else ""

        raise UsageError(f"{source} names step(s) the layout does not have: "
                         + "; ".join(f"{s!r} in {where}{near(s)}" for s, where in bad),
                         hint="the layout's steps: " + ", ".join(layout_steps))


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
        fn = self.findings or _default_unsafe_findings()

        def verdict(att: Attestation) -> list[Refusal]:
            # every file of the model must have been scanned (by its digest), whatever the
            # Statement's subjects say, and nothing the policy refuses may be among them
            files = att.predicate.get("files")
            scanned = {str(e["digest"].get("sha256")) for e in files or []
                       if isinstance(e, Mapping) and isinstance(e.get("digest"), Mapping)} \
                if isinstance(files, list) else set()
            missing = sorted(p for p, d in facts.files.items() if d not in scanned)
            out = [Refusal(f"{self.name}: scan {att.id[:19]} by {facts.name(att.who)} does "
                           f"not cover {', '.join(missing[:5])}", rule=self.name,
                           step=self.step, artifact=missing[0], attestation=att.id,
                           key=att.who)] if missing else []
            problems = fn(dict(att.predicate), include_suspicious=self.include_suspicious,
                          include_unknown=self.include_unknown)
            out.extend(Refusal(f"{self.name}: {p}", rule=self.name, step=self.step,
                               attestation=att.id, key=att.who, artifact=p.split(" ")[0])
                       for p in problems)
            return out

        # a PASSED scan by one functionary never cancels another's refusal (settle)
        return settle(self.name, facts, good, why, self.step, verdict=verdict)


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
        return not Path(self.layout).is_absolute() and is_reference(self.layout)

    def requirement(self) -> AllOf:
        return AllOf(list(self.requirements))

    @property
    def lifecycle(self) -> LifecycleRequirement | None:
        """The lifecycle requirement, which the pipeline prepares with what it fetched."""
        return next((r for r in self.requirements if isinstance(r, LifecycleRequirement)), None)

    def predicate_types(self) -> set[str]:
        """Predicate types the requirements look at (besides the layout's steps)."""
        out: set[str] = set()
        for r in self.requirements:
            if isinstance(r, (RequiredPredicate, ModelSafety)):
                out.add(r.predicate_type)
            elif isinstance(r, LifecycleRequirement):
                out.add(LIFECYCLE_PREDICATE)
        return out


def _unknown(d: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for k in d:
        if k not in allowed:
            raise UsageError(f"{where}: unknown key {k!r}",
                             hint="allowed keys: " + ", ".join(allowed))


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v:
        raise UsageError(f"{where} must be a non-empty string")
    return v


def _opt_str(v: Any, where: str) -> str | None:
    return None if v is None else _str(v, where)


def _list(v: Any, where: str) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise UsageError(f"{where} must be a list, not {type_name(v)}")
    return v


def _exists(p: str, where: str) -> bool:
    """Whether a path names something; a path the OS cannot even look up does not."""
    if "\x00" in p:  # pathlib would quietly say "no"; the file would then fail to open
        raise UsageError(f"{where}: {p!r} contains a NUL character")
    try:
        return Path(p).exists()
    except ValueError as e:  # an embedded NUL
        raise UsageError(f"{where}: {p!r} is not a usable path ({e})") from e
    except OSError:  # e.g. a name too long
        return False


def compile_policy(data: Mapping[str, Any], *, base_dir: Path | None = None,
                   source: str = "policy",
                   load_key: Callable[[str], Key] | None = None) -> Policy:
    """A Policy from parsed YAML. Relative paths are relative to ``base_dir``."""
    from modelseal.intoto_layout.model import key_dict, key_identity, load_functionary_key

    if not isinstance(data, Mapping):
        raise UsageError(f"{source}: a policy is a YAML mapping")
    _unknown(data, POLICY_KEYS, source)
    version = data.get("version", 1)
    if isinstance(version, bool) or version != 1:
        raise UsageError(f"{source}: version {data.get('version')!r} is not supported (1)")
    base = base_dir or Path.cwd()

    def path(p: str) -> str:
        return p if Path(p).is_absolute() else str(base / p)

    layout = _str(data.get("layout"), f"{source}: layout")
    if not _exists(path(layout), f"{source}: layout") and is_reference(layout):
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
    for item in _list(data.get("required_predicates"), f"{source}: required_predicates"):
        if isinstance(item, str):
            reqs.append(RequiredPredicate(item))
        elif isinstance(item, Mapping):
            _unknown(item, ("type", "step"), f"{source}: required_predicates entry")
            reqs.append(RequiredPredicate(_str(item.get("type"), f"{source}: type"),
                                          _opt_str(item.get("step"), f"{source}: step")))
        else:
            raise UsageError(f"{source}: required_predicates entries are URIs or "
                             "{type, step} mappings")
    pairs: list[tuple[str, str]] = []
    for pair in _list(data.get("distinct_signers"), f"{source}: distinct_signers"):
        if not (isinstance(pair, list) and len(pair) == 2
                and all(isinstance(x, str) for x in pair)):
            raise UsageError(f"{source}: distinct_signers entries are [STEP, STEP] pairs, "
                             f"got {pair!r}")
        if pair[0] == pair[1]:
            raise UsageError(f"{source}: distinct_signers [{pair[0]}, {pair[1]}] names one step "
                             "twice")
        pairs.append((pair[0], pair[1]))
        reqs.append(DistinctSigners(pair[0], pair[1]))
    lifecycle = compile_lifecycle(data, source=source, path=path)
    if lifecycle is not None:
        reqs.append(lifecycle)
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
                                _opt_str(safety.get("step"), f"{source}: model_safety.step"),
                                _opt_str(safety.get("predicate_type"),
                                         f"{source}: model_safety.predicate_type")
                                or SAFETY_PREDICATE,
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

        try:
            max_age = parse_duration(age)
        except (OverflowError, ValueError) as e:  # 1e400, nan, 10**30 days
            raise UsageError(f"{source}: max_attestation_age {age!r} is not a usable "
                             "duration") from e
        reqs.append(MaxAge(max_age, counted))
    raw_keys = data.get("layout_keys")
    if isinstance(raw_keys, str):
        raw_keys = [raw_keys]
    if not isinstance(raw_keys, list) or not raw_keys:
        raise UsageError(f"{source}: layout_keys must list at least one public key")
    loader = load_key or load_functionary_key
    keys: dict[str, Key] = {}
    seen: dict[str, str] = {}  # key identity -> the entry that gave it
    for spec in raw_keys:
        s = _str(spec, f"{source}: layout_keys entry")
        if s.startswith("sigstore:"):
            raise UsageError(f"{source}: layout_keys {s!r}: keyless layout signatures are not "
                             "supported; sign the layout with a key (file, HSM or KMS)")
        where = f"{source}: layout_keys entry"
        try:
            k = loader(s if ":" in s and not _exists(path(s), where) else path(s))
        except (OSError, ValueError, TypeError, AttributeError, RecursionError) as e:
            raise InputError(f"{where} {s!r} is not a usable public key: {e}") from e
        ident = key_identity(key_dict(k))
        if ident in seen:
            # two entries, one key: "every listed key signed" would count one signer twice
            raise UsageError(f"{source}: layout_keys {seen[ident]!r} and {s!r} are the same "
                             "key (same key material); list each layout owner once")
        seen[ident] = s
        keys[k.keyid] = k
    return Policy(layout, keys, trusted_root, final_step, reqs, source, pairs)


def load_policy(path: str | Path) -> Policy:
    """Read and compile a policy file (YAML or JSON)."""
    import yaml

    p = Path(path)
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_METADATA_BYTES + 1)
    except FileNotFoundError as e:
        raise UsageError(f"policy {p}: no such file") from e
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise InputError(f"policy {p} cannot be read: {getattr(e, 'strerror', None) or e}"
                         ) from e
    if len(raw) > MAX_METADATA_BYTES:
        raise UsageError(f"policy {p} is larger than {MAX_METADATA_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"policy {p} is not UTF-8 text (byte {e.start})") from e
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as e:
        raise UsageError(f"policy {p} is not valid YAML: {e}") from e
    # plain values only, within the bounds (YAML aliases can stand for gigabytes)
    check_value(data, what=f"policy {p}", error=UsageError)
    policy = compile_policy(data or {}, base_dir=p.resolve().parent, source=f"policy {p}")
    policy.digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return policy
