"""What a policy requires beyond the layout: requirement objects over the decision's facts.

Each requirement checks one property of the ``Facts`` the decision established (signatures,
thresholds and rules already checked) and says what it got and what it expected; ``AllOf``
composes them, like sigstore-python's verification policies. Pure: no I/O (``policy`` loads
the file that names them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from modelseal.errors import InputError, UsageError
from modelseal.formats import (
    LINK_PREDICATE,
    MODEL_SIGNING_PREDICATE,
    SAFETY_PREDICATE,
    TEST_RESULT_PREDICATE,
    VSA_PREDICATE,
)
from modelseal.verify.result import Refusal


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
    - a model-safety scan: ``result`` PASSED, present (ModelSafety also reads its findings).
    """
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
        return _test_result_unread(pred) or _thresholds_missed(pred)
    if predicate_type == VSA_PREDICATE:
        if pred.get("verificationResult") != "PASSED":
            return f"its verificationResult is {pred.get('verificationResult')!r}, not PASSED"
        levels = pred.get("verifiedLevels")
        if levels is not None and (not isinstance(levels, list) or "FAILED" in levels
                                   or not all(isinstance(x, str) for x in levels)):
            # a PASSED result next to a FAILED level contradicts itself
            return f"its verifiedLevels {str(levels)[:100]} contradict a PASSED result"
        return None
    if predicate_type == SAFETY_PREDICATE and pred.get("result") != "PASSED":
        return f"its result is {pred.get('result')!r}, not PASSED"
    return None


def _test_result_unread(pred: Mapping[str, Any]) -> str | None:
    """Why a PASSED test result still says nothing passed: a field of the wrong type (read
    by the predicate's own reader), or lists of tests and thresholds that are there but
    empty (an evaluation that checked nothing; the bare ``{"result": "PASSED"}`` of
    test-result v0.1 stays the functionary's word)."""
    from modelseal.attest.predicates import TestResult

    try:
        tr = TestResult.from_dict(dict(pred))
    except InputError as e:
        return f"it cannot be read ({e.message})"
    if (tr.passed_tests is not None or tr.thresholds is not None) \
            and not tr.passed_tests and not tr.thresholds:
        return "it records no test that passed and declares no threshold"
    return None


def _thresholds_missed(pred: Mapping[str, Any]) -> str | None:
    """Re-check a test result's declared thresholds against its own metrics. A metric or a
    threshold value that is not a finite number (NaN, infinity) holds nothing."""
    from modelseal.attest.statement import Threshold, evaluate, metric_value

    raw, metrics = pred.get("thresholds"), pred.get("metrics")
    if raw is None:
        return None
    if not isinstance(raw, list) or not isinstance(metrics, Mapping):
        return "its thresholds or metrics cannot be read"
    try:
        ts = [Threshold(str(t["metric"]), str(t["op"]), float(t["value"])) for t in raw]
        odd = [str(t) for t in ts if not math.isfinite(t.value)
               or not math.isfinite(metric_value(metrics, t.metric) or 0.0)]
        failed = evaluate(metrics, ts)[1]
    except (KeyError, TypeError, ValueError):
        return "its thresholds cannot be read"
    if odd:
        return f"its thresholds or metrics are not finite numbers: {', '.join(odd)}"
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
        if att.predicate_type == MODEL_SIGNING_PREDICATE:
            return self._signed_files(att)
        subjects = att.subjects
        if not subjects:
            return "it has no sha256 subject"
        manifest_hex = self.manifest_digest.partition(":")[2]
        digests = set(self.files.values())
        for name, d in subjects:
            if d != manifest_hex and d not in digests:
                return (f"its subject {name or '(unnamed)'} sha256:{d[:16]}... is neither a "
                        f"file of this model nor its manifest {self.manifest_digest[:23]}...")
            if d != manifest_hex and name in self.files and self.files[name] != d:
                # the right name with another file's bytes: files swapped between names
                return (f"its subject {name} is sha256:{d[:16]}... but this model's {name} is "
                        f"sha256:{self.files[name][:16]}...")
        if att.predicate_type == VSA_PREDICATE:
            uri = att.predicate.get("resourceUri")
            if uri is not None and (not isinstance(uri, str)
                                    or not uri.endswith("@" + self.manifest_digest)):
                # the summary is of what resourceUri names: a tag can move, a digest is one
                return (f"its resourceUri {str(uri)[:120]!r} does not name this model's "
                        f"manifest {self.manifest_digest[:23]}... by digest")
        covered = {d for _, d in subjects}
        if manifest_hex in covered:
            return None
        missing = sorted(p for p, d in self.files.items() if d not in covered)
        if missing:
            return (f"it does not cover the whole model: {', '.join(missing[:5])}"
                    + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                    + " not among its subjects")
        return None

    def _signed_files(self, att: Attestation) -> str | None:
        """A model_signing signature covers this model when the (path, digest) pairs it signs
        (its subject digest checked against them) are exactly the model's files, as
        ``model_signing verify`` requires of a directory: none missing, none extra."""
        from modelseal.attest.model_signing import statement_files

        try:
            signed = statement_files(att.statement)
        except InputError as e:
            return f"it cannot be read as a model_signing signature ({e.message})"
        path = self._first_difference(signed)
        if path is None:
            return None
        what = ("is not signed" if path not in signed else
                "is not a file of this model" if path not in self.files else
                f"is signed as sha256:{signed[path][:16]}...")
        return f"the model file set differs: {path} {what}"

    def _first_difference(self, signed: Mapping[str, str]) -> str | None:
        """The first path where signed (path, sha256) pairs and the model differ: a file not
        signed, not the model's, or signed with other bytes."""
        return next((p for p in sorted(set(signed) | set(self.files))
                     if signed.get(p) != self.files.get(p)), None)

    def uncovered(self, att: Attestation) -> str | None:
        """The first model file ``att`` does not cover, or names with other bytes (for a
        refusal's artifact)."""
        manifest_hex = self.manifest_digest.partition(":")[2]
        if att.predicate_type == MODEL_SIGNING_PREDICATE:
            from modelseal.attest.model_signing import statement_files

            try:
                return self._first_difference(statement_files(att.statement))
            except InputError:
                return None
        swapped = next((n for n, d in att.subjects if d != manifest_hex and n in self.files
                        and self.files[n] != d), None)
        if swapped:
            return swapped
        covered = {d for _, d in att.subjects}
        if manifest_hex in covered:
            return None
        return next((p for p, d in sorted(self.files.items()) if d not in covered), None)


class Requirement(Protocol):
    """One thing the policy demands beyond the layout."""

    @property
    def name(self) -> str: ...

    def check(self, facts: Facts) -> list[Refusal]: ...


def candidates(facts: Facts, predicate_type: str, step: str | None,
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
    """The refusals of a requirement over its candidates (from ``candidates``): none when at
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
        good, why = candidates(facts, self.predicate_type, self.step, self.name)
        return settle(self.name, facts, good, why, self.step)


VERDICT_PREDICATES = (TEST_RESULT_PREDICATE, VSA_PREDICATE, SAFETY_PREDICATE)
"""Evidence that carries a verdict of its own (``not_passed`` reads it)."""


@dataclass(frozen=True)
class NoFailedVerdict:
    """No attestation about this model signed by a key of the layout says it did not pass
    (a FAILED test result, VSA or scan), whether or not the policy requires that kind:
    negative evidence from a functionary is never outweighed by silence, nor by a PASSED
    report next to it (contradicting evidence is refused, never chosen between). Always
    checked, after the layout's own rules.

    Evidence about another model, or signed by no key of the layout, is not this model's
    verdict and stays ignored (``Facts.binding``)."""

    @property
    def name(self) -> str:
        return "no failed verdict"

    def check(self, facts: Facts) -> list[Refusal]:
        out = []
        for att in facts.attestations:
            if att.predicate_type not in VERDICT_PREDICATES or facts.binding(att):
                continue
            why = not_passed(att.predicate_type, att.statement)
            if why:
                out.append(Refusal(f"{self.name}: attestation {att.id[:19]} "
                                   f"({att.predicate_type}) by {facts.name(att.who)} is about "
                                   f"this model and does not say it passed: {why}",
                                   rule=self.name, key=att.who, attestation=att.id))
        return out


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
        good, why = candidates(facts, self.predicate_type, self.step, self.name)
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
            # a verdict for this model's file name over other bytes (files swapped between
            # names: a loader picks its format by name) is no verdict on the file
            for e in files if isinstance(files, list) else []:
                path = e.get("path") if isinstance(e, Mapping) else None
                dg = e.get("digest") if isinstance(e, Mapping) else None
                got = dg.get("sha256") if isinstance(dg, Mapping) else None
                if isinstance(path, str) and path in facts.files and got != facts.files[path]:
                    out.append(Refusal(
                        f"{self.name}: scan {att.id[:19]} by {facts.name(att.who)} judged "
                        f"{path} as sha256:{str(got)[:16]}..., not this model's "
                        f"sha256:{facts.files[path][:16]}...", rule=self.name, step=self.step,
                        artifact=path, attestation=att.id, key=att.who))
            problems = fn(dict(att.predicate), include_suspicious=self.include_suspicious,
                          include_unknown=self.include_unknown)
            out.extend(Refusal(f"{self.name}: {p}", rule=self.name, step=self.step,
                               attestation=att.id, key=att.who, artifact=p.split(" ")[0])
                       for p in problems)
            failed = not_passed(att.predicate_type, att.statement)
            if failed and not problems:  # the scan's own verdict, whatever its files say
                out.append(Refusal(f"{self.name}: scan {att.id[:19]} by {facts.name(att.who)} "
                                   f"does not say it passed: {failed}", rule=self.name,
                                   step=self.step, attestation=att.id, key=att.who))
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
