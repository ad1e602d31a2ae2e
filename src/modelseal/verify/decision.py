"""The security decision: may this model run? Pure: no network, no files, no clock unless
``now`` is left out (and then read once). A ``Verifier`` is given its trust material (the
signed layout's bytes, the keys trusted to have signed it, the Sigstore trusted root, the
policy's requirement) and fed evidence: the model's (filepath, digest) pairs from its manifest
and the attestations' bytes (``evidence.fetch_evidence`` fetches them).

In the order in-toto's ``in_toto_verify`` works (DESIGN.md section 3):

1. the layout's signatures (``verify_metadata_signatures``: every trusted key signed), once,
   when the Verifier is made;
2. its expiry (``verify_layout_expiration``);
3. every bundle's DSSE signature, keyed or keyless (Sigstore, offline, against the trusted
   root the caller gives: never a default), with the layout's functionary keys
   (``verify_attestations``); signed times beyond ``CLOCK_SKEW`` in the future are refused;
4. assignment: each attestation to the step(s) it is evidence for;
5. authorization: links by keys not authorized for their step are set aside, as in-toto's
   ``verify_link_signature_thresholds`` does, and named; links whose command failed too;
6. thresholds: ``threshold`` distinct authorized keys per step, where a key is its key
   material (``layout.key_identity``: Sigstore identities are keys too; key ids and bundle
   hints are only spellings);
7. constraints (``verify_threshold_constraints``): the threshold signers report identical
   artifacts;
8. rules (``reduce_chain_links`` and ``verify_all_item_rules``): the layout's artifact rules;
9. the final products: the final step's products are exactly the manifest's (filepath,
   digest) pairs, so the weights are never downloaded to decide;
10. the policy's requirements (evidence that covers this model and says it passed, distinct
    signers, age by signed times, stage, model safety); a policy naming a step the layout
    lacks raises UsageError (exit 2) before anything is judged.

Link Statements become ``in_toto.models.link.Link`` objects so that in-toto's own rule
functions judge them; the rule semantics are in-toto's, not re-implemented here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from modelseal._util.time import CLOCK_SKEW, parse_time, rfc3339
from modelseal.errors import InputError, VerificationError
from modelseal.formats import LINK_PREDICATE, SLSA_PROVENANCE_PREDICATE
from modelseal.intoto_layout.lint import check_layout
from modelseal.intoto_layout.model import (
    TrustedLayout,
    is_sigstore_key,
    key_from_dict,
    verify_layout,
)
from modelseal.verify.requirements import (
    AllOf,
    Attestation,
    DistinctSigners,
    Facts,
    NoFailedVerdict,
    Requirement,
    check_policy_steps,
    not_passed,
)
from modelseal.verify.result import (
    Ignored,
    Refusal,
    RequirementOutcome,
    StepOutcome,
    VerificationResult,
)

if TYPE_CHECKING:
    from in_toto.models.link import Link
    from securesystemslib.signer import Key

    from modelseal.attest.bundle import KeylessIdentity

_ARTIFACTS = re.compile(r"matched the following artifacts: (\[.*?\])")


@dataclass(frozen=True)
class Evidence:
    """One attestation as fetched: its id (referrer manifest digest), the bundle's bytes, and
    the referrer's ``created`` annotation (not signed)."""

    id: str
    bundle: bytes
    created: str | None = None


@dataclass(frozen=True)
class ModelView:
    """What the manifest says the model is: its digest and {filepath: "sha256:..."}."""

    digest: str
    files: Mapping[str, str] = field(default_factory=dict)

    def hexes(self) -> dict[str, str]:
        return {p: d.partition(":")[2] if ":" in d else d for p, d in self.files.items()}


def provenance_to_link(step: str, st: Mapping[str, Any]) -> Link:
    """A SLSA provenance v1 Statement as the Link of ``step``: materials are the resolved
    dependencies with a sha256 digest, products the subjects."""
    from in_toto.models.link import Link

    def digests(rds: Any) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for rd in rds or []:
            if not isinstance(rd, Mapping) or not isinstance(rd.get("digest"), Mapping):
                continue
            name = rd.get("name") or rd.get("uri")
            d = rd["digest"].get("sha256")
            if isinstance(name, str) and isinstance(d, str):
                out[name] = {"sha256": d}
        return out

    pred = st.get("predicate") or {}
    bd = pred.get("buildDefinition") if isinstance(pred, Mapping) else None
    deps = bd.get("resolvedDependencies") if isinstance(bd, Mapping) else None
    return Link(name=step, materials=digests(deps), products=digests(st.get("subject")),
                byproducts={}, command=[], environment={})


_TIME_FIELDS = ("finishedOn", "startedOn", "timeVerified", "scannedAt", "timestamp", "time")


def _signed_times(st: Mapping[str, Any], bundle_raw: Mapping[str, Any] | None,
                  keyless: bool, unread: list[tuple[str, str]] | None = None
                  ) -> tuple[datetime | None, list[tuple[str, datetime]]]:
    """(the time the evidence was made, every signed time it carries as (field, time)).

    Signed means covered by the signature: the predicate's own timestamps (provenance
    ``runDetails.metadata``, ``timeVerified``, ``scannedAt``...), or (keyless) the
    transparency log's integrated time. The registry's ``created`` annotation is not.
    A time field that is not an RFC 3339 string is added to ``unread`` as (field, value):
    a signed time nobody can judge must not leave the evidence ageless."""
    found: list[tuple[str, datetime]] = []
    pred = st.get("predicate")
    if isinstance(pred, Mapping):
        rd = pred.get("runDetails")
        meta = rd.get("metadata") if isinstance(rd, Mapping) else None
        places: list[Mapping[str, Any]] = [pred]
        if isinstance(meta, Mapping):
            places.insert(0, meta)
        for place in places:
            for f in _TIME_FIELDS:
                v = place.get(f)
                if v is None:
                    continue
                try:
                    if not isinstance(v, str):
                        raise InputError(f"{v!r} is not a string")
                    found.append((f, parse_time(v)))
                except InputError:
                    if unread is not None:
                        unread.append((f, repr(v)[:60]))
    if keyless and bundle_raw is not None:
        vm = bundle_raw.get("verificationMaterial")
        for e in (vm.get("tlogEntries") if isinstance(vm, Mapping) else None) or []:
            t = e.get("integratedTime") if isinstance(e, Mapping) else None
            if t and str(t).isdigit() and 0 < int(t) < 2**40:
                found.append(("integratedTime", datetime.fromtimestamp(int(t), UTC)))
    made = next((t for f, t in found if f == "finishedOn"), found[0][1] if found else None)
    return made, found


def _artifact_diff(a: Link, b: Link) -> str:
    for kind in ("materials", "products"):
        x, y = getattr(a, kind), getattr(b, kind)
        for p in sorted(set(x) | set(y)):
            if x.get(p) != y.get(p):
                return f"{kind[:-1]} {p}"
    return "artifacts"


class Verifier:
    """The trust decision for one layout: made with its trust material, fed evidence.

    ``layout`` is the signed layout's bytes, ``layout_keys`` the keys trusted to have signed
    it (every one must have), ``trusted_root`` the Sigstore trusted root for keyless
    functionaries (without one their bundles are refused: the decision never picks a default),
    ``requirement`` the policy's requirements and ``final_step`` the step whose products must
    be the model. The reference time ``now`` is fixed once. The layout's signatures are
    checked here, once: ``layout`` is the verified layout, or None (then every ``verify``
    refuses, saying why). Raises UsageError when ``requirement`` or ``final_step`` names a
    step the layout does not have (a bad policy, exit 2)."""

    def __init__(self, layout: bytes, layout_keys: Mapping[str, Key], *,
                 trusted_root: Any = None, requirement: Requirement | None = None,
                 final_step: str | None = None, now: datetime | None = None,
                 layout_source: str = "") -> None:
        self.now = now or datetime.now(UTC)
        self.trusted_root = trusted_root
        self.requirement = requirement
        self.final_step = final_step
        self.layout_source = layout_source
        self.layout: TrustedLayout | None = None
        self.layout_refusals: list[str] = []
        try:
            self.layout = verify_layout(layout, layout_keys)
        except VerificationError as e:
            # every refusal says why, never an empty reason
            self.layout_refusals = list(e.reasons or [e.message])
            return
        # a policy naming a step the layout lacks is a bad policy (exit 2), never a check
        # silently turned off
        check_policy_steps(requirement, final_step,
                           [str(s.name) for s in self.layout.layout.steps])

    def verify(self, model: ModelView, evidence: Sequence[Evidence], *,
               ref: str = "") -> VerificationResult:
        """Decide whether ``model`` may run on ``evidence``. Never raises for a refusal: the
        result says why."""
        now = self.now
        res = VerificationResult(subject=model.digest, ref=ref, layout=self.layout_source,
                                 verified_at=rfc3339(now), attestations_seen=len(evidence))
        tl = self.layout
        if tl is None:
            for r in self.layout_refusals:
                res.refuse(r, rule="layout signature")
            return res
        res.layout_digest = tl.digest
        _check_layout_itself(tl, res, now)
        if res.refusals and not tl.layout.steps:
            return res

        checked = verify_attestations(tl, evidence, trusted_root=self.trusted_root, now=now)
        res.ignored.extend(checked.ignored)
        res.refusals.extend(checked.refusals)
        facts = Facts(manifest_digest=model.digest, files=model.hexes(), now=now,
                      attestations=checked.attestations,
                      step_keys={s.name: sorted(tl.step_identities(s.name))
                                 for s in tl.layout.steps},
                      key_names=tl.describe(),
                      return_values={s.name: tl.return_values(s.name)
                                     for s in tl.layout.steps})
        chain = _steps(tl, checked.attestations, checked.set_aside, facts, res)

        final = self.final_step or tl.final_step
        if final not in {s.name for s in tl.layout.steps}:
            res.refuse(f"the final step {final!r} is not a step of the layout",
                       rule="final products")
        elif chain.get(final):
            _final_products(final, next(iter(chain[final].values())), facts.files, res)
        _requirements(self._all_requirements(tl), facts, res)
        return res

    def _all_requirements(self, tl: TrustedLayout) -> list[Requirement]:
        """The policy's requirements, after the layout's own separation of duties; then no
        failed verdict (last: ``_requirements`` leaves out what another refusal named)."""
        reqs: list[Requirement] = [DistinctSigners(a, b) for a, b in tl.separation_of_duties]
        req = self.requirement
        if req is not None:
            reqs += list(req.requirements) if isinstance(req, AllOf) else [req]
        return [*reqs, NoFailedVerdict()]


def _requirements(reqs: Sequence[Requirement], facts: Facts, res: VerificationResult) -> None:
    """Check each requirement once (by name) over the facts; outcomes and refusals."""
    seen: set[str] = set()
    for req in reqs:
        if req.name in seen:
            continue
        seen.add(req.name)
        out = req.check(facts)
        if isinstance(req, NoFailedVerdict):  # last: a verdict another rule named is told once
            named = {x.attestation for x in res.refusals if x.attestation}
            out = [x for x in out if x.attestation not in named]
        notes = getattr(req, "notes", None)
        if callable(notes):
            res.warnings.extend(notes(facts))
        res.requirements.append(RequirementOutcome(
            req.name, not out, "; ".join(x.message for x in out) if out else "ok"))
        res.refusals.extend(out)


def _check_layout_itself(tl: TrustedLayout, res: VerificationResult, now: datetime) -> None:
    from in_toto.exceptions import LayoutExpiredError
    from in_toto.verifylib import verify_layout_expiration

    # 2. expiry: in-toto's check (wall clock), and against ``now`` when it was given
    try:
        verify_layout_expiration(tl.layout)
        if parse_time(tl.layout.expires) <= now:
            raise LayoutExpiredError("Layout expired")
    except LayoutExpiredError:
        res.refuse(f"the layout expired on {tl.layout.expires}: the layout owner must sign a "
                   "new one", rule="layout expiration")
    if tl.layout.inspect:
        names = ", ".join(i.name for i in tl.layout.inspect)
        res.refuse(f"the layout has inspections ({names}); modelseal decides from metadata "
                   "only and does not run them", rule="inspections")
    for f in check_layout(tl.doc, now=now).findings:
        if f.code not in ("expired",):
            res.warnings.append(f"layout check: {f.message}")


@dataclass
class AttestationCheck:
    """What the bundle check established: the attestations whose signature verified against
    a key of the layout, and what counts for nothing, with why."""

    attestations: list[Attestation] = field(default_factory=list)
    set_aside: dict[str, list[Refusal]] = field(default_factory=dict)  # step -> why
    ignored: list[Ignored] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)  # signed times in the future

    def set_aside_for(self, att: str, ptype: str | None, claimed: Sequence[str],
                      msg: str, rule: str) -> None:
        """An attestation that counts for nothing: ignored, and named for each step it
        claims (shown when that step then lacks its threshold)."""
        why = f"attestation {att[:19]} was refused: {msg}"
        for step in claimed:
            if step:
                why = f"attestation {att[:19]} for step {step} was refused: {msg}"
                self.set_aside.setdefault(step, []).append(Refusal(
                    why, step=step, rule=rule, attestation=att))
        self.ignored.append(Ignored(att, why, ptype))


def layout_signers(tl: TrustedLayout) -> tuple[dict[str, Key], dict[KeylessIdentity, str]]:
    """The layout's functionary keys: (key id -> key, Sigstore identity -> key id)."""
    from modelseal.attest.bundle import KeylessIdentity

    keyed: dict[str, Key] = {}
    keyless: dict[KeylessIdentity, str] = {}
    for kid, d in tl.layout.keys.items():
        if is_sigstore_key(d):
            kv = d.get("keyval") or {}
            keyless[KeylessIdentity(str(kv.get("identity")), str(kv.get("issuer")))] = kid
        else:
            keyed[kid] = key_from_dict(kid, d)
    return keyed, keyless


def verify_attestations(tl: TrustedLayout, evidence: Sequence[Evidence], *,
                        trusted_root: Any, now: datetime) -> AttestationCheck:
    """Verify every bundle against the verified layout's keys (step 3).

    Who signed is the key material that verified (``key_identity``): a bundle's unsigned
    hint, or which of two key ids spelling one key verified, changes nothing. Keyless
    bundles are checked against ``trusted_root`` only: without one they are refused, never
    checked against a default. The same bundle attached twice counts once."""
    from modelseal.attest.bundle import parse_bundle

    keyed, keyless = layout_signers(tl)
    out = AttestationCheck()
    seen: set[str] = set()
    shared: dict[Any, Any] = {}
    for ev in evidence:
        try:
            pb = parse_bundle(ev.bundle)
        except InputError as e:
            out.ignored.append(Ignored(ev.id, f"not a Sigstore bundle: {e}"))
            continue
        if pb.bundle_digest in seen:
            continue  # the same bundle attached twice
        seen.add(pb.bundle_digest)
        att = _verify_one(tl, ev, pb, keyed, keyless, trusted_root, now, out)
        if att is not None:
            _share_artifacts(att.statement, shared)
            out.attestations.append(att)
    return out


def _share_artifacts(st: Mapping[str, Any], shared: dict[Any, Any]) -> None:
    """Let the Statements' subjects and materials share equal names and digests.

    Every link of a pipeline lists the same files: five links of 100,000 files held as parsed
    would repeat each path and digest ten times (about 200 MB). Equal values are swapped for
    one object, in place; nothing a reader can see changes (they are equal, and nothing
    writes to a verified Statement)."""
    pred = st.get("predicate")
    lists = [st.get("subject"), pred.get("materials") if isinstance(pred, Mapping) else None]
    for rds in lists:
        if type(rds) is not list:
            continue
        for rd in rds:
            if type(rd) is not dict:
                continue
            name, digest = rd.get("name"), rd.get("digest")
            if type(name) is str:
                rd["name"] = shared.setdefault(name, name)
            if type(digest) is dict and len(digest) == 1 and type(
                    h := digest.get("sha256")) is str:
                # keyed by a tuple: never equal to a name (a str)
                rd["digest"] = shared.setdefault(("sha256", h), {"sha256": h})


def _claimed_steps(tl: TrustedLayout, ptype: str | None, st: Mapping[str, Any]) -> list[str]:
    """The steps an (unverified) Statement says it is evidence for, to name in refusals."""
    if ptype == LINK_PREDICATE:
        pred = st.get("predicate")
        return [str((pred if isinstance(pred, Mapping) else {}).get("name") or "")]
    if ptype:
        return [s.name for s in tl.layout.steps if ptype in tl.step_predicates(s.name)]
    return []


def _verify_one(tl: TrustedLayout, ev: Evidence, pb: Any, keyed: Mapping[str, Key],
                keyless: Mapping[KeylessIdentity, str], trusted_root: Any, now: datetime,
                out: AttestationCheck) -> Attestation | None:
    """One parsed bundle's signature and signed times; the Attestation, or None (set aside)."""
    from modelseal.attest.bundle import KeylessIdentity, verify_bundle

    ptype, raw = pb.predicate_type, pb.raw
    claimed = _claimed_steps(tl, ptype, pb.statement or {})
    hint = pb.signer_hint
    if pb.keyless and trusted_root is None:
        out.set_aside_for(ev.id, ptype, claimed, "it is signed keylessly and the verifier was "
                          "given no Sigstore trusted root (the policy's trusted_root)",
                          "trusted root")
        return None
    try:
        vs = verify_bundle(ev.bundle, keys=keyed, keyless=list(keyless),
                           trusted_root=trusted_root, parsed=pb)
    except VerificationError as e:
        # the hint is unsigned: it may be named, never trusted as the signer
        out.set_aside_for(ev.id, ptype, claimed,
                          e.message + (f" (it claims signer {hint[:40]}, unverified)"
                                       if hint and hint not in e.message else ""),
                          "signature")
        return None
    ids, names = tl.identities, tl.describe()
    kid = vs.keyid if vs.keyid is not None else keyless[
        KeylessIdentity(str(vs.identity), str(vs.issuer))]
    who = ids[kid]
    # the first key id of this key material (one key listed under two ids is one signer)
    kid = next(k for k, i in ids.items() if i == who) if vs.keyid is None else kid
    unread: list[tuple[str, str]] = []
    made, times = _signed_times(vs.statement, raw, vs.keyid is None, unread)
    future = [(f, t) for f, t in times if t > now + CLOCK_SKEW]
    if future or unread:
        if future:
            f, ft = future[0]
            why = (f"attestation {ev.id[:19]} by {names.get(who, who)} has a signed time in "
                   f"the future ({f} {rfc3339(ft)}, more than {CLOCK_SKEW} after "
                   f"{rfc3339(now)}): refused, not believed")
        else:
            f, v = unread[0]
            why = (f"attestation {ev.id[:19]} by {names.get(who, who)} has a signed time "
                   f"that is not an RFC 3339 time ({f} {v}): its age cannot be judged")
        out.ignored.append(Ignored(ev.id, why, ptype))
        out.refusals.append(Refusal(
            why, rule="signed time", key=who, attestation=ev.id,
            step=claimed[0] if len(claimed) == 1 and claimed[0] else None))
        return None
    t = made
    if t is None and ev.created:
        try:
            t = parse_time(ev.created)  # a hint for people, never for a decision
        except InputError:
            t = None
    return Attestation(ev.id, vs.predicate_type, vs.statement, kid, names.get(who, who), t,
                       made is not None, who)


# ---------------------------------------------------------------------------------------------
# steps 4.-8.: from verified attestations to each step's counted links


@dataclass
class _Chain:
    """Per step, the links counted (by signer identity) and the attestations behind them;
    the steps that failed."""

    links: dict[str, dict[str, Link]]
    atts: dict[str, list[Attestation]]
    bad: set[str] = field(default_factory=set)


def _steps(tl: TrustedLayout, atts: list[Attestation], set_aside: dict[str, list[Refusal]],
           facts: Facts, res: VerificationResult) -> dict[str, dict[str, Link]]:
    """Assign, authorize and count the attestations, then judge each step's threshold,
    constraints and the artifact rules; the links counted per step."""
    steps = {s.name: s for s in tl.layout.steps}
    chain = _Chain({s: {} for s in steps}, {s: [] for s in steps})
    # links first: a functionary's link for a step wins over its provenance for that step
    for att in sorted(atts, key=lambda a: a.predicate_type != LINK_PREDICATE):
        for name, link in _assign(tl, att, res):
            if _authorized(att, name, facts, set_aside, res) and \
                    _succeeded(tl, att, name, set_aside, res):
                _count(chain, att, name, link, res)
    for name, s in steps.items():
        res.steps.append(_outcome(name, int(s.threshold), chain, facts))
        # constraints are judged only over a threshold met
        if not (_threshold(name, int(s.threshold), chain, set_aside, facts, res)
                and _constraints(s, chain, facts, res)):
            chain.bad.add(name)
    facts.step_signers = {n: sorted(c) for n, c in chain.links.items() if n not in chain.bad}
    facts.step_attestations = {n: chain.atts[n] for n in chain.links if n not in chain.bad}
    _rules(tl, chain, res)
    for out in res.steps:
        out.passed = out.name not in chain.bad
    return chain.links


def _assign(tl: TrustedLayout, att: Attestation, res: VerificationResult
            ) -> list[tuple[str, Link]]:
    """The steps ``att`` is evidence for, each with the Link it stands for: a link for the
    step it names (when that step takes links), a provenance for every step that takes it."""
    from securesystemslib.exceptions import FormatError

    from modelseal.attest.statement import statement_to_link

    try:
        if att.predicate_type == LINK_PREDICATE:
            link = statement_to_link(att.statement)
            if link.name not in {s.name for s in tl.layout.steps}:
                res.ignored.append(Ignored(att.id, f"link for step {link.name!r}, which "
                                           "the layout does not have", att.predicate_type))
                return []
            return ([(link.name, link)] if LINK_PREDICATE in tl.step_predicates(link.name)
                    else [])
        if att.predicate_type != SLSA_PROVENANCE_PREDICATE:
            return []
        return [(s.name, provenance_to_link(s.name, att.statement)) for s in tl.layout.steps
                if att.predicate_type in tl.step_predicates(s.name)]
    except (InputError, FormatError) as e:  # FormatError: a digest in-toto's Link refuses
        res.ignored.append(Ignored(att.id, f"malformed link: {str(e)[:300]}",
                                   att.predicate_type))
        return []


def _authorized(att: Attestation, name: str, facts: Facts,
                set_aside: dict[str, list[Refusal]], res: VerificationResult) -> bool:
    """Whether ``att``'s signer is a functionary of step ``name``; else set aside, named."""
    if att.who in facts.step_keys.get(name, []):
        return True
    set_aside.setdefault(name, []).append(Refusal(
        f"attestation {att.id[:19]} for step {name} is signed by {att.signer}, which the "
        f"layout does not authorize for {name}", step=name, rule="authorized functionaries",
        key=att.who, attestation=att.id))
    res.ignored.append(Ignored(att.id, f"{att.signer} is not a functionary of step {name}",
                               att.predicate_type))
    return False


def _succeeded(tl: TrustedLayout, att: Attestation, name: str,
               set_aside: dict[str, list[Refusal]], res: VerificationResult) -> bool:
    """Whether a link's command exited with a value the layout accepts; else set aside.

    A failed run is no evidence that the step was done; a retry that passed counts
    (docs/threat-model.md, "retries")."""
    if att.predicate_type != LINK_PREDICATE:
        return True
    failed = not_passed(att.predicate_type, att.statement, tl.return_values(name))
    if not failed:
        return True
    why = f"attestation {att.id[:19]} for step {name} by {att.signer} does not count: {failed}"
    set_aside.setdefault(name, []).append(Refusal(
        why, step=name, rule="return value", key=att.who, attestation=att.id))
    res.ignored.append(Ignored(att.id, why, att.predicate_type))
    return False


def _count(chain: _Chain, att: Attestation, name: str, link: Link,
           res: VerificationResult) -> None:
    """Count ``link`` for its signer in step ``name``: once per key material. A second,
    different report by the same signer is contradicting evidence (the step fails)."""
    who = att.who
    prev = chain.links[name].get(who)
    if prev is not None and att.predicate_type != LINK_PREDICATE:
        res.ignored.append(Ignored(att.id, f"{att.signer} also signed a link for step "
                                   f"{name}; the link counts", att.predicate_type))
        return
    if prev is not None and (prev.materials != link.materials
                             or prev.products != link.products):
        res.refuse(f"step {name}: {att.signer} signed two attestations with different "
                   f"artifacts ({_artifact_diff(prev, link)} differs): contradicting "
                   "evidence; delete the stale one", step=name,
                   rule="one link per functionary", key=who, attestation=att.id)
        chain.bad.add(name)
        return
    # the same key material's identical report counts once (a retry, or one key listed
    # under two key ids)
    chain.links[name][who] = link
    chain.atts[name].append(att)


def _outcome(name: str, threshold: int, chain: _Chain, facts: Facts) -> StepOutcome:
    counted = sorted(chain.links[name])
    by_id = {a.who: a.keyid for a in chain.atts[name]}
    return StepOutcome(name, threshold, keyids=[by_id.get(i, i) for i in counted],
                       signers=[facts.name(k) for k in counted],
                       attestations=[a.id for a in chain.atts[name]], identities=counted)


def _threshold(name: str, threshold: int, chain: _Chain, set_aside: dict[str, list[Refusal]],
               facts: Facts, res: VerificationResult) -> bool:
    """Whether ``threshold`` distinct authorized signers counted for the step; else refuse,
    with the attestations set aside for it."""
    n = len(chain.links[name])
    if n >= threshold:
        return True
    others = set_aside.get(name, [])
    allowed = ", ".join(facts.name(k) for k in facts.step_keys.get(name, [])) or "nobody"
    if n == 0 and not others:
        res.refuse(f"step {name}: no attestation found (the step is missing; it needs "
                   f"{threshold} signature(s) by {allowed})", step=name, rule="threshold")
        return False
    signers = res.steps[-1].signers
    res.refuse(f"step {name}: threshold {threshold} not met: {n} valid "
               f"signature(s) by distinct authorized functionaries"
               + (f" ({', '.join(signers)})" if signers else "")
               + f"; authorized: {allowed}", step=name, rule="threshold")
    res.refusals.extend(others)
    return False


def _constraints(step: Any, chain: _Chain, facts: Facts, res: VerificationResult) -> bool:
    """in-toto's ``verify_threshold_constraints``, one step at a time so that each failure
    is named: the signers counted for a step report identical artifacts."""
    from in_toto.exceptions import ThresholdVerificationError
    from in_toto.verifylib import verify_threshold_constraints

    try:
        verify_threshold_constraints(SimpleNamespace(steps=[step]), chain.links)
    except ThresholdVerificationError:
        links = list(chain.links[step.name].items())
        k0, l0 = links[0]
        k1, l1 = next((k, li) for k, li in links[1:]
                      if li.materials != l0.materials or li.products != l0.products)
        res.refuse(f"step {step.name}: functionaries report different artifacts: "
                   f"{_artifact_diff(l0, l1)} differs between {facts.name(k0)} and "
                   f"{facts.name(k1)}", step=step.name, rule="threshold artifacts", key=k1)
        return False
    return True


def _rules(tl: TrustedLayout, chain: _Chain, res: VerificationResult) -> None:
    """The layout's artifact rules over the reduced chain, when every step passed."""
    from in_toto.exceptions import RuleVerificationError
    from in_toto.verifylib import reduce_chain_links, verify_all_item_rules

    if chain.bad:
        res.warnings.append("artifact rules not checked: step(s) "
                            + ", ".join(sorted(chain.bad)) + " failed")
        return
    reduced = reduce_chain_links(chain.links)
    for s in tl.layout.steps:
        try:
            verify_all_item_rules([s], reduced)
        except RuleVerificationError as e:
            chain.bad.add(s.name)
            _rule_refusal(s, e, reduced, res)


def _rule_refusal(step: Any, e: Exception, reduced: Mapping[str, Link],
                  res: VerificationResult) -> None:
    """Name the step, rule list, artifact and why it was not consumed."""
    from in_toto.rulelib import unpack_rule
    from in_toto.verifylib import RULE_TRACE

    kind = str(RULE_TRACE.get("source_type", "artifacts"))
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    m = _ARTIFACTS.search(first)
    arts: list[str] = []
    if m:
        arts = re.findall(r"'([^']*)'", m.group(1))
    rules = step.expected_materials if kind == "materials" else step.expected_products
    own = getattr(reduced[step.name], kind)
    if not arts:
        res.refuse(f"step {step.name}: {kind} rule failed: {first}", step=step.name,
                   rule=f"expected_{kind}")
        return
    for art in sorted(arts):
        why = ""
        for rule in rules:
            r = unpack_rule(list(rule))
            if r["rule_type"] != "match":
                continue
            src = art
            if r["source_prefix"]:
                pre = r["source_prefix"].rstrip("/") + "/"
                if not art.startswith(pre):
                    continue
                src = art[len(pre):]
            import fnmatch

            if not fnmatch.fnmatch(src, r["pattern"]):
                continue
            dest = f"{r['dest_prefix'].rstrip('/')}/{src}" if r["dest_prefix"] else src
            other = reduced.get(r["dest_name"])
            theirs = getattr(other, r["dest_type"]).get(dest) if other is not None else None
            mine = own.get(art, {}).get("sha256", "?")
            if theirs is None:
                why = (f": {dest} is not among the {r['dest_type']} of step {r['dest_name']} "
                       f"(rule {' '.join(rule)})")
            else:
                why = (f": its digest sha256:{mine[:16]}... differs from the "
                       f"{r['dest_type'][:-1]} {dest} of step {r['dest_name']} "
                       f"(sha256:{str(theirs.get('sha256', '?'))[:16]}...)")
            break
        res.refuse(f"step {step.name}: {kind[:-1]} {art} is disallowed by the layout's rules"
                   f"{why or ' (no rule allows it)'}", step=step.name,
                   rule=f"expected_{kind}", artifact=art)


def _final_products(final: str, link: Link, files: Mapping[str, str],
                    res: VerificationResult) -> None:
    """The final step's products must be exactly the model's files."""
    products = {p: str(d.get("sha256", "")) for p, d in link.products.items()}
    rule = "final products"
    for path in sorted(set(files) - set(products)):
        res.refuse(f"final products: {path} (sha256:{files[path][:16]}...) is in the model "
                   f"but step {final} did not produce it", step=final, rule=rule, artifact=path)
    for path in sorted(set(products) - set(files)):
        res.refuse(f"final products: step {final} produced {path}, which the model does not "
                   "have (renamed or removed?)", step=final, rule=rule, artifact=path)
    for path in sorted(set(products) & set(files)):
        if products[path] != files[path]:
            res.refuse(f"final products: {path} in the model is sha256:{files[path][:16]}... "
                       f"but step {final} produced sha256:{products[path][:16]}... (content "
                       "swapped)", step=final, rule=rule, artifact=path)
    for out in res.steps:
        if out.name == final and any(r.rule == rule for r in res.refusals):
            out.passed = False
