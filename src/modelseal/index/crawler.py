"""Crawl registry repositories and ``oci:`` directories into the index, incrementally.

For each source: list its tags once, resolve them, and compute per model an evidence key from
content addresses only (the referrer tags, which name the referrers' digests, the fallback
index's digest, and the policy and layout digests). A model whose key is unchanged is not
fetched again; a changed one has its evidence fetched (``verify.evidence.fetch_evidence``)
and verified against the policy's layout keys (``verify.decision.verify_attestations``, the
verifier's own bundle check), its lifecycle judged by ``lifecycle.service.lifecycle_view``.
What does not verify is recorded with the reason, never as verified.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, delete, select

from modelseal._util.time import parse_time, rfc3339
from modelseal.errors import (
    AuthError,
    DigestMismatchError,
    InputError,
    ModelsealError,
    NotFoundError,
    RegistryUnreachableError,
    StoreError,
)
from modelseal.formats import ARTIFACT_TYPE
from modelseal.index import extract
from modelseal.index.schema import attestations, dependencies, models, stage_events, tags

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from modelseal.intoto_layout.model import TrustedLayout
    from modelseal.oci.store import Store
    from modelseal.refs import Ref
    from modelseal.verify.decision import Evidence
    from modelseal.verify.policy import Policy

MAX_TEXT = 500
"""Longest text taken from evidence into the index (names, URIs, signers, reasons): the
rest is cut, so a hostile attestation cannot exceed a column or an index entry."""
NO_POLICY = "indexed without a policy: signature not checked"
BATCH = 200  # models per transaction


@dataclass
class PolicyContext:
    """The trust material the crawl verifies against: the policy's layout, its signatures
    checked once, and the Sigstore trusted root when the layout has keyless signers."""

    policy: Policy
    layout: TrustedLayout
    trusted_root: Any
    names: dict[str, str]  # layout key id -> functionary name
    step_ids: dict[str, set[str]] = field(default_factory=dict)  # step -> key identities

    def __post_init__(self) -> None:
        # computed once: deriving a key's identity (its canonical material) is not cheap
        self.step_ids = {str(s.name): self.layout.step_identities(str(s.name))
                         for s in self.layout.layout.steps}

    @classmethod
    def load(cls, path: str | Path, registry_options: Mapping[str, Any] | None = None
             ) -> PolicyContext:
        """Load a policy file and verify its layout (VerificationError when it does not)."""
        from modelseal.intoto_layout.model import functionary_names, verify_layout
        from modelseal.verify.evidence import load_layout_bytes
        from modelseal.verify.pipeline import trust_root_for
        from modelseal.verify.policy import load_policy

        policy = load_policy(path)
        data, _ = load_layout_bytes(policy, registry_options)
        tl = verify_layout(data, policy.layout_keys)
        return cls(policy, tl, trust_root_for(data, policy), functionary_names(tl.doc))

    @property
    def key(self) -> str:
        return f"{self.policy.digest}|{self.layout.digest}"


@dataclass
class AttestationRow:
    """One attestation as indexed: verified or not (and why), who, which step, when."""

    attestation: str
    predicate_type: str | None
    verified: bool
    reason: str | None
    signer: str | None
    step: str | None
    time: str | None
    time_source: str
    statement: Mapping[str, Any] = field(repr=False, default_factory=dict)


@dataclass
class CrawlReport:
    """What a crawl did."""

    sources: list[str] = field(default_factory=list)
    tags: int = 0
    models: int = 0
    indexed: int = 0  # models whose evidence was fetched and verified
    unchanged: int = 0  # models skipped: same referrers, same policy
    removed: int = 0
    attestations: int = 0
    verified: int = 0
    unverified: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("sources", "tags", "models", "indexed",
                                              "unchanged", "removed", "attestations",
                                              "verified", "unverified")}


def _iso(t: datetime | None) -> str | None:
    return None if t is None else rfc3339(t)


def _time(v: str | None) -> str | None:
    """An unsigned time (a referrer annotation) normalised, or None when it is not one."""
    if not v:
        return None
    try:
        return rfc3339(parse_time(v))
    except InputError:
        return None


def _cap(v: Any) -> Any:
    return v[:MAX_TEXT] if isinstance(v, str) else v


def repo_key(ref: Ref) -> str:
    """How the index names a repository: ``oci:/absolute/dir`` or ``host:port/repo``."""
    if ref.kind == "oci":
        return f"oci:{Path(ref.location).resolve()}"
    return ref.base


def _is_referrer_tag(tag: str) -> bool:
    return tag.startswith("sha256-")


def evidence_keys(store: Store, tag_list: Sequence[str], digests: Iterable[str],
                  policy_key: str) -> dict[str, str]:
    """model digest -> a hash of what its evidence is made of, from content addresses only:
    its referrer tags (each names a referrer digest) and the fallback index's digest."""
    from modelseal.oci.image_layout import LayoutStore

    local = isinstance(store, LayoutStore)  # resolving is a dict lookup: pin every tag
    by_subject: dict[str, list[str]] = {}
    for t in tag_list:
        if _is_referrer_tag(t):
            by_subject.setdefault(t[:71], []).append(t)  # "sha256-" + 64 hex
    out = {}
    for d in digests:
        fb = "sha256-" + d.partition(":")[2]
        parts = [policy_key]
        for t in sorted(by_subject.get(fb, [])):
            parts.append(f"{t}={store.resolve(t) if local or t == fb else ''}")
        out[d] = hashlib.sha256("\n".join(parts).encode()).hexdigest()
    return out


def _list_tags_once(store: Store, listed: list[str]) -> None:
    """Let the crawl's one tag listing answer the listings ``fetch_evidence`` makes per model.

    An image-layout directory sorts every tag on each listing (a referrer tag per attestation:
    40,000 tags for 10,000 models), which made a crawl quadratic; a registry lists them over
    the network, page by page. The crawl is a snapshot: the evidence keys were computed from
    this same listing, so the evidence read matches them."""
    frozen = list(listed)
    setattr(store, "list_tags", lambda: list(frozen))  # noqa: B010  (this store, this crawl)


def _manifest_info(store: Store, digest: str) -> dict[str, Any]:
    from modelseal._util.json import loads_object

    raw, _, got = store.get_manifest(digest)
    if got != digest:
        raise StoreError(f"{store.describe()} returned {got} for {digest}")
    doc = loads_object(raw, what=f"manifest {digest}", error=StoreError)
    anns = doc.get("annotations") if isinstance(doc.get("annotations"), dict) else {}
    assert isinstance(anns, dict)
    layers = doc.get("layers") if isinstance(doc.get("layers"), list) else []
    assert isinstance(layers, list)
    hexes = {str(la.get("digest", "")).partition(":")[2] for la in layers
             if isinstance(la, dict)}
    art = doc.get("artifactType")
    return {"artifact_type": art if isinstance(art, str) else None,
            "name": anns.get("org.cncf.model.name") or anns.get("org.opencontainers.image.title"),
            "version": anns.get("org.opencontainers.image.version"),
            "created": anns.get("org.opencontainers.image.created"),
            "hexes": hexes | {digest.partition(":")[2]}}


def judge_evidence(evidence: Sequence[Evidence], covers: set[str],
                   ctx: PolicyContext | None, now: datetime) -> list[AttestationRow]:
    """Each attestation verified against the policy's layout keys, or recorded with why not.

    Verified means: the signature checks against a key of the layout (the verifier's own bundle
    check), no signed time is in the future, and the Statement is about this model (its
    manifest or one of its files). The step is the one a link names, or the steps whose
    functionaries include the signer and which take the predicate (else any of the signer's)."""
    from modelseal.attest.bundle import parse_bundle

    rows: list[AttestationRow] = []
    verified: dict[str, Any] = {}
    refused: dict[str, str] = {}
    if ctx is not None:
        from modelseal.verify.decision import verify_attestations

        checked = verify_attestations(ctx.layout, evidence, trusted_root=ctx.trusted_root,
                                      now=now)
        verified = {a.id: a for a in checked.attestations}
        for ig in checked.ignored:
            refused.setdefault(ig.attestation, ig.reason)
        for r in checked.refusals:
            if r.attestation:
                refused.setdefault(r.attestation, r.message)
    for ev in evidence:
        try:
            pb = parse_bundle(ev.bundle)
        except InputError as e:
            created = _time(ev.created)
            rows.append(AttestationRow(ev.id, None, False, f"not a Sigstore bundle: {e}",
                                       None, None, created,
                                       "annotation" if created else "none"))
            continue
        st = pb.statement or {}
        att = verified.get(ev.id)
        if att is None:
            reason = NO_POLICY if ctx is None else refused.get(ev.id, "signature not verified")
            rows.append(AttestationRow(ev.id, pb.predicate_type, False, reason,
                                       pb.signer_hint or None, extract.link_step(st),
                                       _time(ev.created),
                                       "annotation" if _time(ev.created) else "none", st))
            continue
        assert ctx is not None
        st = att.statement
        signer = ctx.names.get(att.keyid) or att.signer
        time = _iso(att.time)
        source = "signed" if att.time_signed else ("annotation" if time else "none")
        if not extract.subject_hexes(st) & covers:
            rows.append(AttestationRow(ev.id, att.predicate_type, False,
                                       "its subjects are neither this model's manifest nor "
                                       "any of its files", signer, None, time, source, st))
            continue
        tl = ctx.layout
        mine = [s for s, ids in ctx.step_ids.items() if att.who in ids]
        named = extract.link_step(st)
        if named is not None:
            if named not in mine:
                rows.append(AttestationRow(ev.id, att.predicate_type, False,
                                           f"{signer} is not a functionary of step {named}",
                                           signer, named, time, source, st))
                continue
            step: str | None = named
        else:
            fit = [s for s in mine if att.predicate_type in tl.step_predicates(s)]
            step = ",".join(fit or mine) or None
        rows.append(AttestationRow(ev.id, att.predicate_type, True, None, signer, step, time,
                                   source, st))
    return sorted(rows, key=lambda r: r.attestation)


def _lifecycle(store: Store, digest: str, evidence: Sequence[Evidence],
               ctx: PolicyContext | None, now: datetime
               ) -> tuple[str | None, str | None, str, list[dict[str, Any]]]:
    """(stage, status, basis, verified chain events) of the model."""
    if ctx is None:
        return None, None, "indexed without a policy: stage not verified", []
    from modelseal.lifecycle.service import lifecycle_view

    try:
        view = lifecycle_view(store, digest, ctx.layout, now=now, evidence=evidence)
    except ModelsealError as e:
        return None, None, f"lifecycle not judged: {e}", []
    events = []
    for t in view.chain:
        events.append({"sequence": t.record.sequence, "action": t.record.action,
                       "stage": t.record.stage, "time": _iso(t.time),
                       "signers": ",".join(sorted({s.signer_name for s in t.counted})),
                       "record": t.digest})
    basis = "verified lifecycle chain" if view.chain else "never promoted"
    integrity = [r.message for r in view.refusals if r.rule and "chain" in r.rule]
    if integrity:
        basis += "; " + "; ".join(integrity)
    return view.stage, view.status, basis, events


def _index_model(conn: Connection, store: Store, repo: str, digest: str, info: dict[str, Any],
                 key: str, ctx: PolicyContext | None, now: datetime,
                 report: CrawlReport, *, known: bool = True) -> None:
    from modelseal.oci.image_layout import LayoutStore
    from modelseal.verify.evidence import fetch_evidence

    # a directory answers in microseconds: threads would cost more than they save
    workers = 1 if isinstance(store, LayoutStore) else 16
    evidence, _notes, _skipped, refused = fetch_evidence(store, digest, workers=workers)
    rows = judge_evidence(evidence, info["hexes"], ctx, now)
    rows += [AttestationRow(ig.attestation, ig.predicate_type, False, ig.reason, None, None,
                            None, "none") for ig in refused]
    stage, status, basis, events = _lifecycle(store, digest, evidence, ctx, now)
    where = {"repo": repo, "model_digest": digest}
    if known:
        for t in (attestations, dependencies, stage_events):
            conn.execute(delete(t).where(t.c.repo == repo, t.c.model_digest == digest))
        conn.execute(delete(models).where(models.c.repo == repo, models.c.digest == digest))
    conn.execute(models.insert().values(
        repo=repo, digest=digest, artifact_type=_cap(info["artifact_type"]),
        name=_cap(info["name"]), version=_cap(info["version"]), created=_time(info["created"]),
        evidence_key=key,
        policy=ctx.key if ctx else None, stage=stage, status=status, stage_basis=basis))
    if rows:
        conn.execute(attestations.insert(), [
            {**where, "attestation": r.attestation,
             "predicate_type": _cap(r.predicate_type), "verified": r.verified,
             "reason": _cap(r.reason), "signer": _cap(r.signer), "step": _cap(r.step),
             "time": r.time, "time_source": r.time_source} for r in rows])
    deps = [{**where, "attestation": r.attestation, "kind": d.kind, "role": d.role,
             "digest": _cap(d.digest), "scheme": _cap(d.scheme), "name": _cap(d.name),
             "uri": _cap(d.uri)}
            for r in rows for d in extract.dependencies(r.statement)]
    if deps:
        conn.execute(dependencies.insert(), deps)
    if events:
        conn.execute(stage_events.insert(), [{**where, **e} for e in events])
    report.indexed += 1
    report.attestations += len(rows)
    report.verified += sum(r.verified for r in rows)
    report.unverified += sum(not r.verified for r in rows)


def crawl_source(engine: Engine, source: str, ctx: PolicyContext | None,
                 now: datetime, report: CrawlReport,
                 registry_options: Mapping[str, Any] | None = None) -> None:
    """Index one repository (every tag) or one tagged or pinned reference."""
    from modelseal.oci import open_store
    from modelseal.refs import parse_ref

    ref = parse_ref(source, default_tag=None)
    if ref.kind == "oci" and not Path(ref.location).is_dir():
        raise NotFoundError(f"{source}: no such directory")
    store = open_store(ref, **dict(registry_options or {}))
    repo = repo_key(ref)
    whole = ref.tag is None and ref.digest is None
    all_tags = store.list_tags()
    _list_tags_once(store, all_tags)
    wanted = [t for t in all_tags if not _is_referrer_tag(t)] if whole else (
        [ref.tag] if ref.tag else [])
    current: dict[str, str] = {}
    for t in wanted:
        d = store.resolve(t)
        if d is not None:
            current[t] = d
    digests = set(current.values()) | ({ref.digest} if ref.digest else set())
    if not whole and not digests:
        raise NotFoundError(f"{source} not found in {store.describe()}")
    keys = evidence_keys(store, all_tags, digests, ctx.key if ctx else "")
    report.sources.append(repo)
    with engine.begin() as conn:
        known_tags = {r.tag: r.digest for r in conn.execute(
            select(tags.c.tag, tags.c.digest).where(tags.c.repo == repo))}
        if whole:
            gone = [t for t in known_tags if t not in current]
            for t in gone:
                conn.execute(delete(tags).where(tags.c.repo == repo, tags.c.tag == t))
        for t, d in current.items():
            if known_tags.get(t) != d:
                conn.execute(delete(tags).where(tags.c.repo == repo, tags.c.tag == t))
                conn.execute(tags.insert().values(repo=repo, tag=t, digest=d))
        known = {r.digest: (r.evidence_key, r.artifact_type) for r in conn.execute(
            select(models.c.digest, models.c.evidence_key, models.c.artifact_type)
            .where(models.c.repo == repo))}
        if whole:
            for d in set(known) - digests:
                for tbl in (attestations, dependencies, stage_events):
                    conn.execute(delete(tbl).where(tbl.c.repo == repo, tbl.c.model_digest == d))
                conn.execute(delete(models).where(models.c.repo == repo, models.c.digest == d))
                report.removed += 1
    report.tags += len(current)
    todo = []
    for d in sorted(digests):
        report.models += 1
        old = known.get(d)
        if old is not None and old[0] == keys[d]:
            report.unchanged += 1
        else:
            todo.append(d)
    # a transaction per batch of models: a commit per model costs more than indexing it
    for start in range(0, len(todo), BATCH):
        with engine.begin() as conn:
            for d in todo[start:start + BATCH]:
                try:
                    info = _manifest_info(store, d)
                    if info["artifact_type"] == ARTIFACT_TYPE:
                        # reads and judges first, writes last: a failure writes nothing
                        _index_model(conn, store, repo, d, info, keys[d], ctx, now, report,
                                     known=d in known)
                        continue
                    key: str | None = keys[d]
                    why = "not a model"
                except (RegistryUnreachableError, AuthError):
                    raise  # the source is gone: stop, nothing half-judged is recorded
                except (StoreError, InputError, DigestMismatchError) as e:
                    # hostile or broken content: recorded with the reason, retried next run
                    info = {"artifact_type": None, "name": None}
                    key, why = None, _cap(f"not indexed: {e}")
                for tbl in (attestations, dependencies, stage_events):
                    conn.execute(delete(tbl).where(tbl.c.repo == repo, tbl.c.model_digest == d))
                conn.execute(delete(models).where(models.c.repo == repo,
                                                  models.c.digest == d))
                conn.execute(models.insert().values(
                    repo=repo, digest=d, artifact_type=_cap(info["artifact_type"]),
                    name=_cap(info["name"]), evidence_key=key,
                    policy=ctx.key if ctx else None, stage_basis=why))


def crawl(engine: Engine, sources: Sequence[str], *, policy: str | Path | None = None,
          now: datetime | None = None,
          registry_options: Mapping[str, Any] | None = None) -> CrawlReport:
    """Index every source (``oci:DIR``, ``oci:DIR:TAG``, ``HOST/REPO``, ``HOST/REPO:TAG``)."""
    ctx = PolicyContext.load(policy, registry_options) if policy is not None else None
    now = now or datetime.now(UTC)
    report = CrawlReport()
    for s in sources:
        crawl_source(engine, s, ctx, now, report, registry_options)
    return report

