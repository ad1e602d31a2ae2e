"""The lifecycle decision: from verified records to the model's current stage, and refusals.

Pure: no network, no files, no clock (``now`` is given). Input is what a verifier already
established: each signature over a record, the signer's key *material* (never a key id or a
hint), and the signature's time (verified by a trusted TSA, or only claimed by the signer).
The rules say who may sign which transition (from the layout's ``modelseal.lifecycle``
extension, signed by the layout owner) and the options what the deployer requires.

Chain rules (docs/lifecycle.md):

1. a record counts once ``threshold`` distinct authorized key materials signed its exact
   Statement; signers of a step the rule must stay distinct from do not count;
2. effective records form one chain: sequence 1, 2, ... each naming the digest of the one
   before; two effective records with one sequence number are contradicting evidence
   (refused), a gap or a wrong ``previous`` is a deleted or forged record (refused);
3. nothing follows a retirement;
4. a record's time is the earlier of its signed claimed time and its verified TSA time (a
   timestamp bounds the signing time from above: it catches postdating, and re-stamping an
   old record cannot make it fresh); times never go backwards along the chain where both
   are TSA-bounded, and times in the future are refused;
5. a verifier that remembers a longer chain (``known``) refuses a shorter or different one:
   deleting the retirement brings nothing back to life.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from modelseal._util.time import CLOCK_SKEW, rfc3339
from modelseal.attest.lifecycle import LifecycleRecord
from modelseal.verify.result import Refusal

RULE_SIG = "lifecycle authorization"
RULE_CHAIN = "lifecycle chain"
RULE_ROLLBACK = "lifecycle rollback"
RULE_STAGE = "lifecycle stage"
RULE_AGE = "lifecycle stage age"
RULE_TIME = "lifecycle time"
RULE_TAG = "lifecycle tag"
INTEGRITY_RULES = (RULE_CHAIN, RULE_ROLLBACK, RULE_TIME)


@dataclass(frozen=True)
class SignedRecord:
    """One verified signature over one lifecycle record."""

    record: LifecycleRecord
    digest: str  # record digest (attest.lifecycle.record_digest)
    evidence: str  # referrer or bundle digest
    signer: str  # canonical key material (layout.key_identity)
    signer_name: str  # for people: functionary name or key description
    trusted_time: datetime | None = None  # verified RFC 3161 time
    tsa: str | None = None

    @property
    def time(self) -> datetime | None:
        """When it was signed, at the latest. A TSA timestamp proves the signature existed by
        then (an upper bound: anyone can have an old signature stamped anew, never stamped
        earlier); the signed claimed time cannot be changed by whoever holds the bundle. The
        earlier of the two, so re-stamping an old record never makes it fresh."""
        claimed = self.record.claimed_time()
        if self.trusted_time is None:
            return claimed
        return min(self.trusted_time, claimed) if claimed else self.trusted_time


@dataclass(frozen=True)
class TransitionRule:
    """Who may sign one kind of transition: ``threshold`` of ``signers`` (key materials), none
    of whom counted for a step in ``distinct_from``."""

    name: str  # promote:STAGE, promote:*, deprecate, retire, correct
    signers: frozenset[str]
    threshold: int = 1
    distinct_from: tuple[str, ...] = ()


@dataclass
class LifecycleRules:
    """The layout's lifecycle section: transition name -> rule; names of the key materials."""

    transitions: dict[str, TransitionRule] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # material -> functionary name

    def rule_for(self, record: LifecycleRecord) -> TransitionRule | None:
        if record.action == "promote":
            return (self.transitions.get(f"promote:{record.stage}")
                    or self.transitions.get("promote:*"))
        return self.transitions.get(record.action)


@dataclass(frozen=True)
class ChainState:
    """The head of a model's chain, as a verifier remembers it (TUF's trusted state)."""

    sequence: int
    head: str  # record digest
    stage: str
    status: str

    def to_dict(self) -> dict[str, Any]:
        return {"sequence": self.sequence, "head": self.head, "stage": self.stage,
                "status": self.status}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ChainState:
        seq = d.get("sequence")
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise ValueError("sequence is not an integer")
        return cls(seq, str(d["head"]), str(d["stage"]), str(d["status"]))


@dataclass(frozen=True)
class TagRelease:
    """The latest release under a tag that a verifier has seen: which model, and when."""

    digest: str
    time: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "time": rfc3339(self.time)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TagRelease:
        from modelseal._util.time import parse_time

        return cls(str(d["digest"]), parse_time(str(d["time"])))


@dataclass(frozen=True)
class LifecycleOptions:
    """What the deployer's policy requires of the lifecycle."""

    required_stage: str | None = None
    refuse_deprecated: bool = False
    stage_max_age: timedelta | None = None
    require_trusted_time: bool = False  # ages judged only by TSA time
    tag: str | None = None  # the tag the model was resolved from: with required_stage, it
    # must be a tag the model was promoted under
    skew: timedelta = CLOCK_SKEW


@dataclass
class Transition:
    """One record in the model's story, with everyone who signed it."""

    record: LifecycleRecord
    digest: str
    signatures: list[SignedRecord] = field(default_factory=list)
    counted: list[SignedRecord] = field(default_factory=list)
    threshold: int = 1
    effective: bool = False
    time: datetime | None = None  # when it reached its threshold
    time_source: str = "none"  # rfc3161 | claimed | none

    @property
    def supersedes(self) -> str | None:
        return self.record.previous

    def to_dict(self) -> dict[str, Any]:
        return {
            "record": self.digest, "sequence": self.record.sequence,
            "action": self.record.action, "stage": self.record.stage,
            "status": self.record.status, "reason": self.record.reason,
            "ticket": self.record.ticket, "tag": self.record.tag,
            "corrections": self.record.corrections or None,
            "supersedes": self.supersedes, "effective": self.effective,
            "threshold": self.threshold,
            "time": rfc3339(self.time) if self.time else None,
            "timeSource": self.time_source,
            "signers": [{"name": s.signer_name, "key": s.signer, "evidence": s.evidence,
                         "counted": s in self.counted,
                         "time": rfc3339(s.time) if s.time else None,
                         "timeSource": "rfc3161" if s.trusted_time else "claimed",
                         "tsa": s.tsa} for s in self.signatures],
        }


@dataclass
class LifecycleView:
    """The verdict on a model's lifecycle."""

    model_digest: str
    chain: list[Transition] = field(default_factory=list)  # effective, sequence order
    pending: list[Transition] = field(default_factory=list)  # below threshold, at head + 1
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (evidence, why)
    refusals: list[Refusal] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tag_release: TagRelease | None = None  # this model's release under the verified tag

    @property
    def head(self) -> Transition | None:
        return self.chain[-1] if self.chain else None

    @property
    def stage(self) -> str | None:
        return self.head.record.stage if self.head else None

    @property
    def status(self) -> str | None:
        for t in reversed(self.chain):
            if t.record.status:
                return t.record.status
        return None

    @property
    def corrections(self) -> dict[str, Any]:
        """The model's metadata corrections in force: later records win, field by field."""
        out: dict[str, Any] = {}
        for t in self.chain:
            out.update(t.record.corrections)
        return out

    def state(self) -> ChainState | None:
        """What a verifier should remember: the head of a chain whose integrity held (a
        retired or stale model is refused, but its chain is still worth remembering)."""
        if self.head is None or any(r.rule in INTEGRITY_RULES for r in self.refusals):
            return None
        return ChainState(self.head.record.sequence, self.head.digest,
                          self.head.record.stage, self.status or "active")

    def refuse(self, message: str, rule: str, **where: str | None) -> None:
        self.refusals.append(Refusal(message, rule=rule, **where))

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.model_digest, "stage": self.stage, "status": self.status,
                "corrections": self.corrections,
                "chain": [t.to_dict() for t in self.chain],
                "pending": [t.to_dict() for t in self.pending],
                "ignored": [{"attestation": e, "reason": r} for e, r in self.ignored],
                "refusals": [r.to_dict() for r in self.refusals],
                "warnings": list(self.warnings)}


def _transitions(records: Sequence[SignedRecord], rules: LifecycleRules, model_digest: str,
                 now: datetime, options: LifecycleOptions,
                 step_signers: Mapping[str, Sequence[str]], view: LifecycleView
                 ) -> list[Transition]:
    """Group signatures by record and count the authorized ones (rule 1)."""
    by_digest: dict[str, Transition] = {}
    for sr in records:
        if sr.record.digest != model_digest:
            view.ignored.append((sr.evidence, f"lifecycle record about {sr.record.digest}, "
                                 f"not this model {model_digest}"))
            continue
        t = by_digest.setdefault(sr.digest, Transition(sr.record, sr.digest))
        if any(s.signer == sr.signer for s in t.signatures):
            continue  # the same key's signature attached twice counts once
        t.signatures.append(sr)
    out = []
    for t in by_digest.values():
        rule = rules.rule_for(t.record)
        what = f"{t.record.action} to {t.record.stage}" if t.record.action == "promote" \
            else t.record.action
        if rule is None:
            for s in t.signatures:
                view.ignored.append((s.evidence, f"the layout authorizes nobody to {what}"))
            out.append(t)
            continue
        t.threshold = rule.threshold
        conflicted = {m for step in rule.distinct_from for m in step_signers.get(step, ())}
        for s in t.signatures:
            if s.signer not in rule.signers:
                view.ignored.append((s.evidence, f"{s.signer_name} is not authorized to "
                                     f"{what} (transition {rule.name})"))
                continue
            if s.signer in conflicted:
                steps = [st for st in rule.distinct_from if s.signer in step_signers.get(st, ())]
                view.ignored.append((s.evidence, f"{s.signer_name} signed step "
                                     f"{', '.join(steps)} and may not also {what}"))
                view.warnings.append(f"lifecycle: {s.signer_name}'s approval of record "
                                     f"{t.record.sequence} ({what}) does not count: they "
                                     f"signed {', '.join(steps)}")
                continue
            claimed = s.record.claimed_time()
            if s.trusted_time is not None and claimed is not None \
                    and claimed > s.trusted_time + options.skew:
                view.refuse(f"lifecycle record {t.record.sequence} ({what}) claims to be signed "
                            f"by {s.signer_name} at {rfc3339(claimed)}, after its trusted "
                            f"timestamp {rfc3339(s.trusted_time)} (postdated)", RULE_TIME,
                            key=s.signer, attestation=s.evidence)
                continue
            st = s.time
            if st is not None and st > now + options.skew:
                view.refuse(f"lifecycle record {t.record.sequence} ({what}) is signed by "
                            f"{s.signer_name} at {rfc3339(st)}, in the future", RULE_TIME,
                            key=s.signer, attestation=s.evidence)
                continue
            t.counted.append(s)
        if len(t.counted) >= rule.threshold:
            t.effective = True
            timed = sorted((s for s in t.counted if s.time is not None),
                           key=lambda s: s.time or now)
            if len(timed) >= rule.threshold:
                reached = timed[:rule.threshold]
                t.time = reached[-1].time
                t.time_source = ("rfc3161" if all(s.trusted_time for s in reached)
                                 else "claimed")
        out.append(t)
    return out


def evaluate(
    records: Sequence[SignedRecord],
    rules: LifecycleRules,
    *,
    model_digest: str,
    now: datetime,
    options: LifecycleOptions | None = None,
    known: ChainState | None = None,
    step_signers: Mapping[str, Sequence[str]] | None = None,
) -> LifecycleView:
    """The model's lifecycle from verified signatures over lifecycle records. Never raises for
    a refusal: the view lists them (rules and keys named)."""
    options = options or LifecycleOptions()
    view = LifecycleView(model_digest)
    ts = _transitions(records, rules, model_digest, now, options, step_signers or {}, view)
    effective = sorted((t for t in ts if t.effective), key=lambda t: t.record.sequence)

    # rule 2: one chain from sequence 1, each record naming the one before
    by_seq: dict[int, list[Transition]] = {}
    for t in effective:
        by_seq.setdefault(t.record.sequence, []).append(t)
    seq = 1
    while seq in by_seq:
        cands = by_seq[seq]
        prev = view.chain[-1].digest if view.chain else None
        if len(cands) > 1:
            view.refuse(f"lifecycle chain forks at record {seq}: "
                        + " and ".join(f"{c.record.action} {c.record.stage} ({c.digest[:19]})"
                                       for c in cands)
                        + " are both approved", RULE_CHAIN,
                        attestation=cands[1].signatures[0].evidence)
            break
        t = cands[0]
        if t.record.previous != prev:
            view.refuse(f"lifecycle record {seq} ({t.record.action}) names previous record "
                        f"{t.record.previous} but the chain's record {seq - 1} is {prev}: a "
                        "record was deleted or forged", RULE_CHAIN,
                        attestation=t.signatures[0].evidence)
            break
        if view.chain and view.chain[-1].record.action == "retire":
            view.refuse(f"lifecycle record {seq} ({t.record.action} {t.record.stage}) follows "
                        "the retirement; a retired model stays retired", RULE_CHAIN,
                        attestation=t.signatures[0].evidence)
            break
        if view.chain and t.time and view.chain[-1].time and t.time_source == "rfc3161" \
                and view.chain[-1].time_source == "rfc3161" and t.time < view.chain[-1].time:
            view.refuse(f"lifecycle record {seq} was timestamped at {rfc3339(t.time)}, before "
                        f"record {seq - 1} ({rfc3339(view.chain[-1].time)})", RULE_TIME,
                        attestation=t.signatures[0].evidence)
            break
        view.chain.append(t)
        seq += 1
    chained = {t.digest for t in view.chain}
    stray = [t for t in effective if t.digest not in chained]
    if stray and not view.refusals:
        first = min(stray, key=lambda t: t.record.sequence)
        # a record in the gap that is attached but lacks authorized signatures is not deleted:
        # say which, so its signer (or the layout's rules) can be fixed
        gap = range(len(view.chain) + 1, first.record.sequence)
        unapproved = sorted((t for t in ts if not t.effective and t.record.sequence in gap),
                            key=lambda t: t.record.sequence)
        def lacking(t: Transition) -> str:
            if rules.rule_for(t.record) is None:
                return f"the layout authorizes nobody to {t.record.action}"
            return (f"{len(t.counted)} of the {t.threshold} authorized signature(s) it needs "
                    "(see ignored)")

        why = ("the records between were deleted" if not unapproved else "; ".join(
            f"record {t.record.sequence} ({t.record.action}) is attached but not approved: "
            f"{lacking(t)}" for t in unapproved))
        view.refuse(f"lifecycle record {first.record.sequence} ({first.record.action}) does "
                    f"not continue the chain (which ends at record {len(view.chain)}): {why}",
                    RULE_CHAIN, attestation=first.signatures[0].evidence)
    head = view.head
    for t in ts:
        if t.effective:
            continue
        at_head = (t.record.sequence == (head.record.sequence + 1 if head else 1)
                   and t.record.previous == (head.digest if head else None))
        if at_head:
            view.pending.append(t)
        else:
            for s in t.signatures:
                view.ignored.append((s.evidence, f"lifecycle record {t.record.sequence} "
                                     "never reached its threshold and was overtaken"))

    # rule 5: the verifier's memory
    if known is not None:
        mine = next((t for t in view.chain if t.record.sequence == known.sequence), None)
        if head is None or head.record.sequence < known.sequence:
            have = f"record {head.record.sequence}" if head else "no record"
            view.refuse(f"lifecycle rollback: this verifier has seen record {known.sequence} "
                        f"(stage {known.stage}, {known.status}) but the registry shows {have}: "
                        "a record was deleted", RULE_ROLLBACK)
        elif mine is None or mine.digest != known.head:
            view.refuse(f"lifecycle rollback: record {known.sequence} is not the one this "
                        f"verifier saw ({known.head[:19]}): the chain was rewritten",
                        RULE_ROLLBACK)
    return view


def check_requirements(view: LifecycleView, options: LifecycleOptions, now: datetime,
                       known_tag: TagRelease | None = None) -> None:
    """The deployer's requirements on a view: stage, deprecation, retirement, age, tag.

    ``known_tag``: the latest release under ``options.tag`` this verifier has seen; a tag
    moved back to an earlier release is refused."""
    head = view.head
    if head is None:
        if options.required_stage or options.stage_max_age:
            pend = (f" ({len(view.pending)} pending below threshold)" if view.pending else "")
            view.refuse(f"no approved lifecycle record{pend}: the model was never promoted",
                        RULE_STAGE)
        return
    if view.status == "retired":
        view.refuse(f"the model was retired (record {head.record.sequence}: "
                    f"{head.record.reason})", RULE_STAGE,
                    attestation=head.signatures[0].evidence)
        return
    if options.required_stage and head.record.stage != options.required_stage:
        view.refuse(f"the model's stage is {head.record.stage!r} (record "
                    f"{head.record.sequence}), not {options.required_stage!r}", RULE_STAGE,
                    attestation=head.signatures[0].evidence)
    if view.status == "deprecated":
        dep = next(t for t in reversed(view.chain) if t.record.action == "deprecate")
        msg = f"the model is deprecated (record {dep.record.sequence}: {dep.record.reason})"
        if options.refuse_deprecated:
            view.refuse(msg, RULE_STAGE, attestation=dep.signatures[0].evidence)
        else:
            view.warnings.append(msg)
    if options.stage_max_age is not None:
        affirm = next((t for t in reversed(view.chain) if t.record.action == "promote"), None)
        if affirm is None or affirm.time is None:
            view.refuse("no promotion with a time affirms the stage", RULE_AGE)
        elif options.require_trusted_time and affirm.time_source != "rfc3161":
            view.refuse(f"the stage was last affirmed by record {affirm.record.sequence}, "
                        "which has no trusted (TSA) time", RULE_AGE,
                        attestation=affirm.signatures[0].evidence)
        elif now - affirm.time > options.stage_max_age:
            view.refuse(f"the stage {affirm.record.stage} was last affirmed at "
                        f"{rfc3339(affirm.time)} ({affirm.time_source} time), longer than "
                        f"{options.stage_max_age} ago: it needs a fresh re-affirmation",
                        RULE_AGE, attestation=affirm.signatures[0].evidence)
        elif affirm.time_source != "rfc3161":
            view.warnings.append(f"lifecycle: the stage's age is judged by the time the "
                                 f"signer claims (record {affirm.record.sequence}); no "
                                 "trusted TSA timestamp")
    if options.tag is not None and options.required_stage:
        released = [t for t in view.chain if t.record.action == "promote" and t.record.tag]
        mine = [t for t in released if t.record.tag == options.tag]
        if not mine:
            tags = ", ".join(sorted({str(t.record.tag) for t in released})) or "none"
            view.refuse(f"tag {options.tag!r} points at {view.model_digest[:23]}..., which was "
                        f"never released under that tag (released as: {tags})", RULE_TAG)
        elif mine[-1].time is not None:
            at = mine[-1].time
            view.tag_release = TagRelease(view.model_digest, at)
            if known_tag is not None and known_tag.digest != view.model_digest \
                    and known_tag.time > at:
                view.refuse(f"tag {options.tag!r} was moved back: it points at "
                            f"{view.model_digest[:23]}... (released {rfc3339(at)}), but this "
                            f"verifier saw {known_tag.digest[:23]}... released under it at "
                            f"{rfc3339(known_tag.time)}", RULE_TAG)
                view.tag_release = None
