"""Lifecycle with I/O: sign and attach transitions, read a model's history.

``transition()`` is what ``modelseal promote|deprecate|retire`` do, ``history()`` what
``modelseal history`` does; both take an open store, so a Python caller does exactly what a
command does. The judging is ``verify.lifecycle_chain.evaluate`` (pure).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelseal._util.time import rfc3339
from modelseal.attest.lifecycle import (
    RETIRED,
    LifecycleRecord,
    check_stage,
    record_digest,
    record_of_statement,
)
from modelseal.errors import InputError, UsageError, VerificationError
from modelseal.formats import LIFECYCLE_ACTIONS, LIFECYCLE_PREDICATE
from modelseal.verify.lifecycle_chain import (
    ChainState,
    LifecycleOptions,
    LifecycleView,
    check_requirements,
    evaluate,
)
from modelseal.verify.lifecycle_records import (
    layout_key_materials,
    rules_from_layout,
    verify_lifecycle_bundles,
)

if TYPE_CHECKING:
    from cryptography.x509 import Certificate
    from securesystemslib.signer import Signer

    from modelseal.attest.tsa import TSAClient
    from modelseal.intoto_layout.model import TrustedLayout
    from modelseal.oci.store import Store
    from modelseal.refs import Ref
    from modelseal.verify.decision import Evidence
    from modelseal.verify.lifecycle_requirement import LifecycleRequirement
    from modelseal.verify.policy import Policy



def fetch_all(store: Store, digest: str) -> list[Evidence]:
    """Every bundle attached to the model (fetch_evidence of the verifier, no filtering)."""
    from modelseal.verify.evidence import fetch_evidence

    return fetch_evidence(store, digest)[0]


def _lifecycle_evidence(evidence: Sequence[Evidence]) -> list[Evidence]:
    from modelseal.attest.bundle import parse_bundle

    out = []
    for ev in evidence:
        try:
            if parse_bundle(ev.bundle).predicate_type == LIFECYCLE_PREDICATE:
                out.append(ev)
        except InputError:
            continue
    return out


def lifecycle_view(store: Store, digest: str, layout: TrustedLayout, *,
                   tsa_roots: Sequence[Certificate] = (), now: datetime | None = None,
                   options: LifecycleOptions | None = None,
                   known: ChainState | None = None,
                   evidence: Sequence[Evidence] | None = None) -> LifecycleView:
    """The verified lifecycle of the model ``digest`` in ``store`` under ``layout``."""
    now = now or datetime.now(UTC)
    options = options or LifecycleOptions()
    ev = _lifecycle_evidence(evidence if evidence is not None else fetch_all(store, digest))
    records, ignored = verify_lifecycle_bundles(ev, layout, tsa_roots=tsa_roots)
    view = evaluate(records, rules_from_layout(layout), model_digest=digest, now=now,
                    options=options, known=known)
    view.ignored[:0] = ignored
    check_requirements(view, options, now)
    return view


# ---------------------------------------------------------------------------------------------
# transitions


@dataclass
class TransitionResult:
    """A signed and attached lifecycle record (new, or an approval of a pending one)."""

    record: LifecycleRecord
    digest: str  # record digest
    referrer: str
    approved_existing: bool
    bundle: bytes = field(repr=False)
    verified_head: bool  # the head was chosen from verified records (a layout was given)
    timestamped: bool

    def to_dict(self) -> dict[str, Any]:
        return {"record": self.digest, "referrer": self.referrer,
                "approval": self.approved_existing, "sequence": self.record.sequence,
                "action": self.record.action, "stage": self.record.stage,
                "previous": self.record.previous, "model": self.record.digest,
                "tag": self.record.tag, "verifiedHead": self.verified_head,
                "timestamped": self.timestamped}


@dataclass
class _Candidate:
    record: LifecycleRecord
    digest: str
    statement: dict[str, Any]
    keyids: set[str]


def _structural(evidence: Sequence[Evidence], model: str) -> list[_Candidate]:
    """Unverified lifecycle records about ``model``, grouped by record digest."""
    from modelseal.attest.bundle import parse_bundle

    found: dict[str, _Candidate] = {}
    for ev in evidence:
        try:
            pb = parse_bundle(ev.bundle)
            st = pb.statement
            if st is None or pb.predicate_type != LIFECYCLE_PREDICATE:
                continue
            rec = record_of_statement(st)
        except InputError:
            continue
        if rec.digest != model:
            continue
        c = found.setdefault(record_digest(st), _Candidate(rec, record_digest(st), st, set()))
        c.keyids.update(k for k, _ in pb.signatures if k)
    return list(found.values())


def _structural_head(cands: list[_Candidate]) -> _Candidate | None:
    """The end of the longest linked chain from record 1 (signatures unchecked)."""
    head: _Candidate | None = None
    while True:
        nxt = [c for c in cands if c.record.previous == (head.digest if head else None)
               and c.record.sequence == (head.record.sequence + 1 if head else 1)]
        if not nxt:
            return head
        if len(nxt) > 1:
            raise VerificationError(
                f"the lifecycle chain forks at record {nxt[0].record.sequence}; sign with "
                "--policy so that signatures and thresholds decide which record counts")
        head = nxt[0]


def transition(
    store: Store,
    ref: Ref,
    *,
    action: str,
    signer: Signer,
    stage: str | None = None,
    reason: str | None = None,
    ticket: str | None = None,
    tsa: TSAClient | None = None,
    layout: TrustedLayout | None = None,
    tsa_roots: Sequence[Certificate] = (),
    now: datetime | None = None,
    corrections: Mapping[str, Any] | None = None,
) -> TransitionResult:
    """Sign a lifecycle transition of the model at ``ref`` and attach it.

    A pending record (below its threshold) asking for the same transition is co-signed
    (an approval) instead of starting a competing record. With ``layout`` (from the
    deployer's policy) the chain's head is chosen among verified, approved records; without
    it, from the records' links alone (signatures unchecked)."""
    from modelseal.attest.attachments import attach_bundle, subject_of
    from modelseal.attest.bundle import sign_statement

    now = (now or datetime.now(UTC)).replace(microsecond=0)
    if action not in LIFECYCLE_ACTIONS:
        raise UsageError(f"unknown lifecycle action {action!r}")
    if (action == "correct") != bool(corrections):
        raise UsageError("a correction says what it corrects (--set FIELD=VALUE), and only a "
                         "correction does")
    if action == "promote":
        if not stage:
            raise UsageError("promote needs --stage")
        check_stage(stage)
        if stage == RETIRED:
            raise UsageError("'retired' is not a stage to promote to: use modelseal retire")
    if action in ("deprecate", "retire", "correct") and not reason:
        raise UsageError(f"{action} needs --reason")
    subject = subject_of(store, ref.reference)
    digest = subject.digest
    evidence = fetch_all(store, digest)
    my_keyid = str(signer.public_key.keyid)

    head_rec: LifecycleRecord | None
    head_digest: str | None
    pending: list[tuple[LifecycleRecord, str, dict[str, Any], set[str]]] = []
    if layout is not None:
        view = lifecycle_view(store, digest, layout, tsa_roots=tsa_roots, now=now,
                              evidence=evidence)
        chain_refusals = [r for r in view.refusals if r.rule != "lifecycle stage"]
        if chain_refusals:
            raise VerificationError("the model's lifecycle chain is refused; fix it first",
                                    reasons=[r.message for r in chain_refusals])
        head_rec = view.head.record if view.head else None
        head_digest = view.head.digest if view.head else None
        for t in view.pending:
            st = t.record.statement()
            pending.append((t.record, t.digest, st, {s.signer for s in t.signatures}))
    else:
        cands = _structural(evidence, digest)
        head = _structural_head(cands)
        head_rec = head.record if head else None
        head_digest = head.digest if head else None
        # without thresholds, the head itself is what others may still be approving
        if head is not None:
            pending.append((head.record, head.digest, head.statement, head.keyids))

    if head_rec is not None and head_rec.action == "retire":
        raise UsageError(f"{ref.base}@{digest} is retired (record {head_rec.sequence}); a "
                         "retired model stays retired: publish a new version")
    tag = ref.tag if action == "promote" and not ref.digest else None
    new_stage = (stage if action == "promote" else RETIRED if action == "retire"
                 else (head_rec.stage if head_rec else None))
    if new_stage is None:
        raise UsageError(f"{ref.base}@{digest} has no lifecycle record yet: promote it before "
                         f"you {action} it")

    # an approval: the same transition already proposed at the head, not yet signed by us
    for rec, rdigest, st, signed_by in pending:
        if rec.action != action or rec.stage != new_stage or rec.tag != tag \
                or rec.corrections != dict(corrections or {}):
            continue
        if (reason is not None and reason != rec.reason) or (
                ticket is not None and ticket != rec.ticket):
            raise UsageError(
                f"record {rec.sequence} ({rec.action} {rec.stage}, reason {rec.reason!r}, "
                f"ticket {rec.ticket!r}) awaits approval; approve it with the same --reason "
                "and --ticket (or without them) rather than proposing a competing record")
        if my_keyid in signed_by or _material_of(signer) in signed_by:
            if layout is not None:
                raise UsageError(f"you already approved record {rec.sequence} ({rec.action} "
                                 f"{rec.stage}); it awaits other approvers")
            continue  # signed by us before: a new record (re-affirmation)
        bundle = sign_statement(st, signer, tsa)
        att = attach_bundle(store, subject, bundle, "lifecycle record")
        return TransitionResult(rec, rdigest, att.descriptor.digest, True, bundle,
                                layout is not None, tsa is not None)

    base_seq = head_rec.sequence if head_rec else 0
    rec = LifecycleRecord(action, new_stage, ref.base, digest, base_seq + 1, head_digest,
                          rfc3339(now), reason, ticket, tag, dict(corrections or {}))
    st = rec.statement()
    bundle = sign_statement(st, signer, tsa)
    att = attach_bundle(store, subject, bundle, "lifecycle record")
    return TransitionResult(rec, record_digest(st), att.descriptor.digest, False, bundle,
                            layout is not None, tsa is not None)


def _material_of(signer: Signer) -> str:
    from modelseal.intoto_layout.model import key_dict, key_identity

    try:
        return key_identity(key_dict(signer.public_key))
    except (InputError, AttributeError, ValueError):
        return ""


# ---------------------------------------------------------------------------------------------
# history


@dataclass
class HistoryEvent:
    """One thing that happened to the model, as its evidence says."""

    kind: str  # step | lifecycle | attestation
    what: str
    who: list[str]
    time: str | None
    time_source: str  # rfc3161 | claimed | annotation | none
    evidence: list[str]
    verified: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "what": self.what, "who": self.who, "time": self.time,
                "timeSource": self.time_source, "evidence": self.evidence,
                "verified": self.verified, **self.detail}


@dataclass
class History:
    ref: str
    digest: str
    events: list[HistoryEvent]
    lifecycle: LifecycleView | None

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "digest": self.digest,
                "stage": self.lifecycle.stage if self.lifecycle else None,
                "status": self.lifecycle.status if self.lifecycle else None,
                "events": [e.to_dict() for e in self.events],
                "lifecycle": self.lifecycle.to_dict() if self.lifecycle else None}


def history(store: Store, ref: Ref, *, layout: TrustedLayout | None = None,
            tsa_roots: Sequence[Certificate] = (), now: datetime | None = None,
            known: ChainState | None = None) -> History:
    """The model's story in time order: pipeline steps and other attestations, then each
    lifecycle record with its approvals and what it superseded.

    With ``layout`` every signature is verified against the layout's keys and signers are
    named by key material; without it, what the bundles claim is shown, marked unverified."""
    from modelseal._util.time import parse_time
    from modelseal.attest.attachments import subject_of
    from modelseal.attest.bundle import parse_bundle, verify_bundle
    from modelseal.attest.tsa import verified_times
    from modelseal.intoto_layout.model import is_sigstore_key, key_from_dict

    now = now or datetime.now(UTC)
    digest = subject_of(store, ref.reference).digest
    evidence = fetch_all(store, digest)
    keyed = {}
    names: dict[str, str] = {}
    if layout is not None:
        keyed = {kid: key_from_dict(kid, d) for kid, d in layout.layout.keys.items()
                 if not is_sigstore_key(d)}
        rules = rules_from_layout(layout)
        names = {kid: rules.names.get(m, kid[:16])
                 for kid, m in layout_key_materials(layout).items()}
    events: list[HistoryEvent] = []
    for ev in evidence:
        try:
            pb = parse_bundle(ev.bundle)
        except InputError:
            continue
        if pb.predicate_type == LIFECYCLE_PREDICATE:
            continue
        st = pb.statement or {}
        verified = False
        who = pb.signer_hint
        if layout is not None:
            try:
                vs = verify_bundle(ev.bundle, keys=keyed)
                verified = True
                who = names.get(str(vs.keyid), who)
            except (VerificationError, InputError):
                who = f"{who} (signature not valid under the layout)"
        tt = verified_times(pb.raw, tsa_roots).earliest if tsa_roots else None
        when, source = (rfc3339(tt.time), "rfc3161") if tt else (None, "none")
        if when is None and ev.created:
            with contextlib.suppress(InputError):
                when, source = rfc3339(parse_time(ev.created)), "annotation"
        raw_pred = st.get("predicate")
        pred: dict[str, Any] = raw_pred if isinstance(raw_pred, dict) else {}
        if pb.predicate_type == "https://in-toto.io/attestation/link/v0.3":
            kind, what = "step", f"step {pred.get('name')}"
        else:
            kind, what = "attestation", str(pb.predicate_type)
        events.append(HistoryEvent(kind, what, [who], when, source, [ev.id], verified,
                                   {"predicateType": pb.predicate_type}))
    view = None
    if layout is not None:
        view = lifecycle_view(store, digest, layout, tsa_roots=tsa_roots, now=now,
                              known=known, evidence=evidence)
        for t in [*view.chain, *view.pending]:
            verb = ("promoted to " + t.record.stage if t.record.action == "promote"
                    else "corrected " + ", ".join(sorted(t.record.corrections))
                    if t.record.action == "correct" else t.record.action + "d")
            events.append(HistoryEvent(
                "lifecycle", f"record {t.record.sequence}: {verb}"
                + ("" if t.effective else f" (pending: {len(t.counted)}/{t.threshold})"),
                [s.signer_name for s in t.signatures],
                rfc3339(t.time) if t.time else None, t.time_source,
                [s.evidence for s in t.signatures], True, t.to_dict()))
    else:
        for c in sorted(_structural(evidence, digest), key=lambda c: c.record.sequence):
            events.append(HistoryEvent(
                "lifecycle", f"record {c.record.sequence}: {c.record.action} {c.record.stage}",
                sorted(c.keyids), c.record.time, "claimed", [], False,
                {"record": c.digest, "sequence": c.record.sequence,
                 "supersedes": c.record.previous,
                 "reason": c.record.reason, "ticket": c.record.ticket, "tag": c.record.tag}))
    # time order; records without a time keep their sequence order, last
    events.sort(key=lambda e: (e.time is None, e.time or "", e.kind == "lifecycle",
                               int(e.detail.get("sequence") or 0)))
    return History(str(ref), digest, events, view)


# ---------------------------------------------------------------------------------------------
# verification with the lifecycle (the hook the verifier's pipeline takes; see docs)


def load_policy_with_lifecycle(path: str | Path) -> tuple[Policy, LifecycleRequirement | None]:
    """A policy file and its lifecycle requirement (None when it asks for none)."""
    from modelseal.verify.policy import load_policy

    policy = load_policy(path)
    return policy, policy.lifecycle


def trusted_layout(policy: Policy, registry_options: Mapping[str, Any] | None = None
                   ) -> TrustedLayout:
    """The policy's layout, its signatures checked against the policy's layout keys."""
    from modelseal.intoto_layout.model import verify_layout
    from modelseal.verify.evidence import load_layout_bytes

    data, _ = load_layout_bytes(policy, registry_options)
    return verify_layout(data, policy.layout_keys)
